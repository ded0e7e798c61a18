package cache

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestMiddleware304ChangingVary revalidates a stored response with a 304
// whose Vary differs from the stored one. The stored request values no
// longer describe the fields the new Vary names, and "Vary: *" never
// matches (RFC 9111 section 4.1), so the next request must not be a hit.
// A 304 that repeats the stored Vary keeps the entry.
func TestMiddleware304ChangingVary(t *testing.T) {
	for _, tc := range []struct {
		name    string
		vary304 string
		hit     bool
	}{
		{name: "star", vary304: "*"},
		{name: "added field", vary304: "Accept-Language, X-Tenant"},
		{name: "other field", vary304: "X-Tenant"},
		{name: "same fields", vary304: "accept-language", hit: true},
		{name: "no vary", hit: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newTestClock()
			o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=10")
				w.Header().Set("ETag", `"v1"`)
				w.Header().Set("Vary", "Accept-Language")
				fmt.Fprint(w, "body-v1")
			})
			p := newTestProxy(t, clock, o, defaultPolicy())
			p.get(t, "/v", "Accept-Language: en")

			o.set(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=60")
				w.Header().Set("ETag", `"v1"`)
				if tc.vary304 != "" {
					w.Header().Set("Vary", tc.vary304)
				}
				if r.Header.Get("If-None-Match") != "" {
					w.WriteHeader(http.StatusNotModified)
					return
				}
				fmt.Fprint(w, "body-v1")
			})
			clock.Advance(20 * time.Second)
			r := p.get(t, "/v", "Accept-Language: en", "X-Tenant: a")
			wantStatus(t, r, 200)
			if r.body != "body-v1" {
				t.Errorf("revalidated body = %q, want body-v1", r.body)
			}
			wantCacheStatus(t, r, "fwd-status=304")
			wantRequests(t, o, 2)

			r = p.get(t, "/v", "Accept-Language: en", "X-Tenant: b")
			if got := r.header.Get("Cache-Status"); strings.Contains(got, "hit") != tc.hit {
				t.Errorf("after a 304 with Vary %q: Cache-Status %q, want hit %v", tc.vary304, got, tc.hit)
			}
		})
	}
}
