package config

import (
	"strings"
	"testing"
)

const policyBase = `
l7:
  listeners:
    - name: web
      address: 127.0.0.1:8080
      limits:
        max_body_bytes: 1MiB
      policy:
        compress: {}
        access:
          deny: [10.0.0.0/8]
  upstreams:
    - name: app
      backends: [{address: 127.0.0.1:9000}]
  routes:
    - name: api
      upstream: app
      policy:
        rate_limit: {requests: 10, burst: 5}
        rewrite:
          path: {strip_prefix: /api}
          request_headers:
            set: {X-Client: "${client_ip}"}
`

func TestPolicyDefaults(t *testing.T) {
	f, err := Parse([]byte(policyBase))
	if err != nil {
		t.Fatalf("Parse() error = %v", err)
	}
	l := f.L7.Listeners[0]
	if l.Limits.MaxRequestLine != DefaultMaxRequestLine {
		t.Errorf("limits.max_request_line = %d, want %d", l.Limits.MaxRequestLine, DefaultMaxRequestLine)
	}
	if l.Limits.MaxBodyBytes != 1<<20 {
		t.Errorf("limits.max_body_bytes = %d, want %d", l.Limits.MaxBodyBytes, 1<<20)
	}
	if got := l.Policy.Compress.Encodings; strings.Join(got, ",") != "zstd,br,gzip" {
		t.Errorf("compress.encodings = %v, want zstd,br,gzip", got)
	}
	rl := f.L7.Routes[0].Policy.RateLimit
	if rl.Key != "client" || rl.Per != Duration(1e9) || rl.MaxKeys != DefaultRateLimitMaxKeys {
		t.Errorf("rate_limit defaults = key %q per %s max_keys %d", rl.Key, rl.Per, rl.MaxKeys)
	}

	merged := l.Policy.Merge(f.L7.Routes[0].Policy)
	if merged.Compress == nil || merged.Access == nil {
		t.Errorf("Merge() lost listener sections: %+v", merged)
	}
	if merged.RateLimit != rl {
		t.Errorf("Merge() rate_limit = %p, want the route's %p", merged.RateLimit, rl)
	}
}

func TestPolicyErrors(t *testing.T) {
	tests := []struct {
		name    string
		replace [2]string
		want    string
	}{
		{"bad cidr", [2]string{"10.0.0.0/8", "10.0.0.0/99"}, `l7.listeners[0].policy.access.deny[0]: "10.0.0.0/99" is not a CIDR`},
		{"bad key", [2]string{"burst: 5}", "burst: 5, key: ip}"}, `l7.routes[0].policy.rate_limit.key: "ip" is not client`},
		{"zero requests", [2]string{"requests: 10", "requests: 0"}, `rate_limit.requests: 0 is below 1`},
		{"unknown variable", [2]string{"${client_ip}", "${client}"}, `unknown variable ${client}`},
		{"unterminated variable", [2]string{"${client_ip}", "${client_ip"}, `is not closed by }`},
		{"bad prefix", [2]string{"strip_prefix: /api", "strip_prefix: api"}, `path.strip_prefix: "api" must start with /`},
		{"bad level", [2]string{"compress: {}", "compress: {gzip_level: 12}"}, `compress.gzip_level: 12 is outside 1..9`},
		{"bad encoding", [2]string{"compress: {}", "compress: {encodings: [deflate]}"}, `"deflate" is not one of gzip, br, zstd`},
		{"bad window", [2]string{"compress: {}", "compress: {zstd_window: 1000}"}, `zstd_window: 1000 is not a power of two`},
		{"unknown key", [2]string{"burst: 5}", "burst: 5, nodelay: true}"}, `rate_limit.nodelay: unknown key`},
		{"delay with redis", [2]string{"burst: 5}", "burst: 5, delay: true, redis: {address: 127.0.0.1:6379}}"}, `rate_limit.delay: is set together with redis`},
		{"uri above line", [2]string{"max_body_bytes: 1MiB", "max_uri_length: 9KiB"}, `limits.max_uri_length: 9216 is outside`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(policyBase, tc.replace[0], tc.replace[1], 1)
			_, err := Parse([]byte(doc))
			if err == nil {
				t.Fatalf("Parse() error = nil, want one containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse() error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func FuzzTemplateVariables(f *testing.F) {
	for _, s := range []string{"", "${client_ip}", "a$$b", "${", "$x", "https://${hostname}${request_uri}", "${a}${b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tmpl string) {
		names, err := TemplateVariables(tmpl)
		if err != nil {
			return
		}
		for _, n := range names {
			if !strings.Contains(tmpl, "${"+n+"}") {
				t.Errorf("TemplateVariables(%q) returned %q, which is not in the template", tmpl, n)
			}
		}
	})
}
