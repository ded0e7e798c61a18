package cache

import (
	"net/http"
	"testing"
	"time"
)

// TestTargetedCacheControl checks that a valid CDN-Cache-Control decides
// storing and reuse in place of Cache-Control and Expires, and that an
// invalid one is ignored (RFC 9213 section 2.2).
func TestTargetedCacheControl(t *testing.T) {
	runReuseCases(t, []reuseCase{
		{name: "max-age", rfc: "RFC 9213 section 2.2", fields: []string{"CDN-Cache-Control: max-age=3600"}, advance: time.Minute, reused: true},
		{name: "max-age beyond 2^31", rfc: "RFC 9213 section 2.2", fields: []string{"CDN-Cache-Control: max-age=99999999999"}, advance: time.Minute, reused: true},
		{name: "Age older than max-age", rfc: "RFC 9213 section 2.2", fields: []string{"CDN-Cache-Control: max-age=3600", "Age: 7200"}},
		{name: "max-age=0", rfc: "RFC 9213 section 2.2", fields: []string{"CDN-Cache-Control: max-age=0"}},
		{name: "extension directive", rfc: "RFC 9213 section 2.2", fields: []string{"CDN-Cache-Control: foobar, max-age=3600"}, advance: time.Minute, reused: true},
		{name: "past Expires ignored", rfc: "RFC 9213 section 2.2", fields: []string{"CDN-Cache-Control: max-age=3600", "Expires: " + clockDate(-10000)}, advance: time.Minute, reused: true},
		{name: "future Expires ignored", rfc: "RFC 9213 section 2.2", fields: []string{"CDN-Cache-Control: max-age=0", "Expires: " + clockDate(10000)}},
		{name: "longer than Cache-Control", rfc: "RFC 9213 section 2.2", fields: []string{"Cache-Control: max-age=1", "CDN-Cache-Control: max-age=3600"}, advance: time.Minute, reused: true},
		{name: "shorter than Cache-Control", rfc: "RFC 9213 section 2.2", fields: []string{"Cache-Control: max-age=3600", "CDN-Cache-Control: max-age=1"}, advance: time.Minute},
		{name: "private", rfc: "RFC 9213 section 2.2", fields: []string{"CDN-Cache-Control: private", "Cache-Control: max-age=10000", "Expires: " + clockDate(10000)}},
		{name: "no-cache", rfc: "RFC 9213 section 2.2", fields: []string{"CDN-Cache-Control: no-cache", "Cache-Control: max-age=10000", "Expires: " + clockDate(10000)}},
		{name: "no-store", rfc: "RFC 9213 section 2.2", fields: []string{"Cache-Control: max-age=10000", "CDN-Cache-Control: no-store", "Expires: " + clockDate(10000)}},
		{name: "stored despite Cache-Control no-store", rfc: "RFC 9213 section 2.2", fields: []string{"Cache-Control: no-store", "CDN-Cache-Control: max-age=10000"}, advance: time.Minute, reused: true},
		{name: "invalid field ignored", rfc: "RFC 9213 section 2.2", fields: []string{"CDN-Cache-Control: max-age=10000, &&&&&", "Cache-Control: no-store"}},
		{name: "string max-age ignores the field", rfc: "RFC 9213 section 2.2", fields: []string{"CDN-Cache-Control: max-age=\"10000\"", "Cache-Control: no-store"}},
		// A valid field without freshness still replaces Cache-Control,
		// and it reaches the client as sent.
		{name: "field forwarded", rfc: "RFC 9213 section 2.2", fields: []string{"Cache-Control: max-age=10000", "CDN-Cache-Control: foo"}, advance: time.Minute, wantFields: []string{"CDN-Cache-Control: foo"}},
	})
}

// testStorePolicy is the store policy of a route with the defaults.
var testStorePolicy = storePolicy{strict: true, heuristic: true, targeted: true}

// TestParseTargeted checks the parse of CDN-Cache-Control lines.
func TestParseTargeted(t *testing.T) {
	d, ok := parseTargeted([]string{"max-age=60, s-maxage=120", "must-revalidate, stale-if-error=30"})
	if !ok {
		t.Fatal("valid field not parsed")
	}
	if !d.targeted {
		t.Error("directives not marked targeted")
	}
	if d.maxAge.secs != 60 || d.sMaxAge.secs != 120 {
		t.Errorf("max-age %d, s-maxage %d, want 60 and 120", d.maxAge.secs, d.sMaxAge.secs)
	}
	if !d.mustRevalidate {
		t.Error("must-revalidate from the second line lost")
	}
	if d.staleIfError.secs != 30 {
		t.Errorf("stale-if-error %d, want 30", d.staleIfError.secs)
	}
	for _, bad := range [][]string{{""}, {"max-age=1.5"}, {"s-maxage=?1"}, {"max-age=60,"}} {
		if _, ok := parseTargeted(bad); ok {
			t.Errorf("parseTargeted(%q) accepted", bad)
		}
	}
	if d, ok := parseTargeted([]string{"max-age=-5"}); !ok || !d.maxAge.present || d.maxAge.valid {
		t.Errorf("negative max-age: %+v, %v; want present and invalid, so stale", d, ok)
	}
	h := http.Header{"Cache-Control": {"max-age=5"}, cdnCacheControl: {"max-age=(1 2)"}}
	if d := parseResponseCacheControl(h, true); d.targeted || d.maxAge.secs != 5 {
		t.Errorf("inner-list max-age: %+v; want the field ignored for Cache-Control", d)
	}
	h[cdnCacheControl] = []string{"max-age=30, x=(1 2)"}
	if d := parseResponseCacheControl(h, true); !d.targeted || d.maxAge.secs != 30 {
		t.Errorf("inner-list extension: %+v; want the field used", d)
	}
}

// TestTargetedCacheControlOff turns cdn_cache_control off for a route and
// checks that Cache-Control and Expires decide again.
func TestTargetedCacheControlOff(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fields []string
		reused bool
	}{
		{name: "Cache-Control no-store wins", fields: []string{"Cache-Control: no-store", "CDN-Cache-Control: max-age=10000"}},
		{name: "Cache-Control max-age wins", fields: []string{"Cache-Control: max-age=3600", "CDN-Cache-Control: no-store"}, reused: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newTestClock()
			o := fieldOrigin(t, clock, 0, tc.fields)
			policy := defaultPolicy()
			policy.CDNCacheControl = false
			p := newTestProxy(t, clock, o, policy)

			getManual(t, p, "/r")
			p.waitHandlers()
			clock.Advance(time.Minute)
			getManual(t, p, "/r")
			p.waitHandlers()

			want := int64(2)
			if tc.reused {
				want = 1
			}
			if got := o.requests.Load(); got != want {
				t.Errorf("origin saw %d requests, want %d", got, want)
			}
		})
	}
}
