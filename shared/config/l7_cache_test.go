package config

import (
	"errors"
	"strings"
	"testing"
)

const cacheBase = `
l7:
  listeners:
    - name: web
      address: 127.0.0.1:8080
  upstreams:
    - name: app
      backends:
        - address: 127.0.0.1:9000
`

func TestCacheDefaults(t *testing.T) {
	f, err := Parse([]byte(cacheBase + `
  routes:
    - name: all
      upstream: app
      cache:
        enabled: true
`))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if f.L7.Cache == nil || f.L7.Cache.MaxSize != DefaultCacheMaxSize {
		t.Errorf("l7.cache = %+v, want max_size %d", f.L7.Cache, DefaultCacheMaxSize)
	}
	rc := f.L7.Routes[0].Cache
	if rc.MaxEntrySize != DefaultCacheMaxEntrySize {
		t.Errorf("max_entry_size = %d, want %d", rc.MaxEntrySize, DefaultCacheMaxEntrySize)
	}
	if rc.CoalesceTimeout != DefaultCacheCoalesceTimeout {
		t.Errorf("coalesce_timeout = %s, want %s", rc.CoalesceTimeout, DefaultCacheCoalesceTimeout)
	}
	if !rc.StrictEnabled() || !rc.HeuristicEnabled() || rc.StoreSetCookie {
		t.Errorf("strict %v heuristic %v store_set_cookie %v, want true true false", rc.StrictEnabled(), rc.HeuristicEnabled(), rc.StoreSetCookie)
	}
	if !rc.CDNCacheControlEnabled() {
		t.Error("cdn_cache_control off by default, want on")
	}
}

func TestCacheExplicitValues(t *testing.T) {
	f, err := Parse([]byte(cacheBase + `
  cache:
    max_size: 64MiB
  routes:
    - name: all
      upstream: app
      cache:
        enabled: true
        key: [header:X-Tenant, cookie:plan, client]
        max_entry_size: 1MiB
        strict: false
        store_set_cookie: true
        heuristic: false
        cdn_cache_control: false
        coalesce_timeout: 2s
`))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	rc := f.L7.Routes[0].Cache
	if f.L7.Cache.MaxSize != 64<<20 || rc.MaxEntrySize != 1<<20 || rc.StrictEnabled() || rc.HeuristicEnabled() || !rc.StoreSetCookie || rc.CoalesceTimeout.D().Seconds() != 2 {
		t.Errorf("decoded %+v, %+v", f.L7.Cache, rc)
	}
	if rc.CDNCacheControlEnabled() {
		t.Error("cdn_cache_control: false decoded as on")
	}
	if len(rc.Key) != 3 {
		t.Errorf("key = %q, want 3 parts", rc.Key)
	}
}

func TestCacheValidation(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		path string
		msg  string
	}{
		{"bad key part", `
  routes:
    - name: all
      upstream: app
      cache: {enabled: true, key: ["ip"]}
`, "l7.routes[0].cache.key[0]", `"ip" is not header:NAME, cookie:NAME or client`},
		{"header name with space", `
  routes:
    - name: all
      upstream: app
      cache: {enabled: true, key: ["header:X Y"]}
`, "l7.routes[0].cache.key[0]", "is not header:NAME"},
		{"duplicate key part", `
  routes:
    - name: all
      upstream: app
      cache: {enabled: true, key: ["cookie:a", "cookie:a"]}
`, "l7.routes[0].cache.key[1]", "repeats key[0]"},
		{"entry larger than budget", `
  cache: {max_size: 1MiB}
  routes:
    - name: all
      upstream: app
      cache: {enabled: true, max_entry_size: 2MiB}
`, "l7.routes[0].cache.max_entry_size", "is larger than cache.max_size"},
		{"tiny budget", `
  cache: {max_size: 1KiB}
  routes:
    - name: all
      upstream: app
`, "l7.cache.max_size", "below the minimum of 64KiB"},
		{"tiny entry", `
  routes:
    - name: all
      upstream: app
      cache: {enabled: true, max_entry_size: 10}
`, "l7.routes[0].cache.max_entry_size", "below the minimum of 1KiB"},
		{"unknown key", `
  routes:
    - name: all
      upstream: app
      cache: {enabled: true, ttl: 5s}
`, "l7.routes[0].cache", "ttl"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(cacheBase + tc.yaml))
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Parse error = %v, want Errors", err)
			}
			for _, e := range errs {
				if strings.HasPrefix(e.Path, tc.path) && strings.Contains(e.Error(), tc.msg) {
					return
				}
			}
			t.Errorf("Parse errors = %v, want one at %s containing %q", err, tc.path, tc.msg)
		})
	}
}

// FuzzValidCacheKeyPart checks that every accepted key part has one of the
// three documented forms.
func FuzzValidCacheKeyPart(f *testing.F) {
	for _, seed := range []string{"client", "header:X-Tenant", "cookie:sid", "header:", "cookie:a b", "ip", "header:a:b"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, part string) {
		if !validCacheKeyPart(part) {
			return
		}
		if part == "client" {
			return
		}
		kind, name, _ := strings.Cut(part, ":")
		if (kind != "header" && kind != "cookie") || name == "" || strings.ContainsAny(name, " \t:,;\"") {
			t.Fatalf("validCacheKeyPart(%q) = true for kind %q name %q", part, kind, name)
		}
	})
}
