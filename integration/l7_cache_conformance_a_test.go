//go:build integration

package integration

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestL7CacheFastHitFreshness runs the tidegate binary and checks RFC 9111
// freshness on the listener's fast path, which serves fresh hits without
// net/http. It covers Age and Date on a hit, a field kept with the
// response, and responses that must never be served as hits.
func TestL7CacheFastHitFreshness(t *testing.T) {
	date := time.Now().UTC().Format(http.TimeFormat)
	responses := map[string]string{
		"/aged":        "HTTP/1.1 200 OK\r\nDate: " + date + "\r\nCache-Control: max-age=3600\r\nAge: 30\r\nContent-Length: 2\r\n\r\nok",
		"/range-field": "HTTP/1.1 200 OK\r\nCache-Control: max-age=3600\r\nContent-Range: bytes 0-1/2\r\nContent-Length: 2\r\n\r\nok",
		"/old-age":     "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nAge: 120\r\nContent-Length: 2\r\n\r\nok",
		"/s-maxage":    "HTTP/1.1 200 OK\r\nCache-Control: max-age=3600, s-maxage=0\r\nContent-Length: 2\r\n\r\nok",
		"/no-cache":    "HTTP/1.1 200 OK\r\nCache-Control: max-age=3600, no-cache\r\nETag: \"n\"\r\nContent-Length: 2\r\n\r\nok",
	}
	conditional := map[string]string{
		"/no-cache": "HTTP/1.1 304 Not Modified\r\nETag: \"n\"\r\nCache-Control: max-age=3600, no-cache\r\n\r\n",
	}
	// A listener without PROXY headers, like a client connecting directly.
	addr := freeAddr(t)
	l := startCacheL7(t, rawCacheBackend(t, responses, conditional), fmt.Sprintf(`    - name: direct
      address: %s`, addr))
	fastServed := func(t *testing.T) float64 {
		v, _ := metricValue(t, l.admin, `tidegate_l7_fast_path_requests_total{listener="direct"}`)
		return v
	}
	get := func(t *testing.T, path string) map[string]string {
		t.Helper()
		raw := rawHTTP(t, addr, "GET "+path+" HTTP/1.1\r\nHost: "+cacheHost+"\r\nConnection: close\r\n\r\n")
		status, lines, body := splitResponse(t, path, raw)
		if !strings.Contains(status, " 200 ") || body != "ok" {
			t.Fatalf("GET %s: %q %q, want 200 ok", path, status, body)
		}
		fields := map[string]string{}
		for _, f := range lines {
			name, value, _ := strings.Cut(f, ":")
			fields[http.CanonicalHeaderKey(name)] = strings.TrimSpace(value)
		}
		return fields
	}
	hit := func(fields map[string]string) bool {
		return strings.HasPrefix(fields["Cache-Status"], "tidegate; hit")
	}

	t.Run("age and date on a hit", func(t *testing.T) {
		get(t, "/aged")
		before := fastServed(t)
		f := get(t, "/aged")
		if !hit(f) {
			t.Fatalf("second GET /aged: Cache-Status %q, want a hit", f["Cache-Status"])
		}
		if after := fastServed(t); after != before+1 {
			t.Errorf("fast path served %v requests, want 1", after-before)
		}
		// RFC 9111 section 4.2.3: the age includes the upstream Age.
		if age, err := strconv.Atoi(f["Age"]); err != nil || age < 30 {
			t.Errorf("Age = %q, want at least the upstream 30", f["Age"])
		}
		// RFC 9110 section 6.6.1: a cache sends the Date it received.
		if f["Date"] != date {
			t.Errorf("Date = %q, want the upstream %q", f["Date"], date)
		}
	})

	t.Run("Content-Range kept on a 200", func(t *testing.T) {
		get(t, "/range-field")
		f := get(t, "/range-field")
		if !hit(f) {
			t.Fatalf("second GET /range-field: Cache-Status %q, want a hit", f["Cache-Status"])
		}
		// RFC 9110 section 14.4: the field has no meaning on a 200, so the
		// response is stored and sent with it like any other field.
		if f["Content-Range"] != "bytes 0-1/2" {
			t.Errorf("Content-Range = %q, want bytes 0-1/2", f["Content-Range"])
		}
	})

	for _, path := range []string{"/old-age", "/s-maxage"} {
		t.Run("never fresh "+path, func(t *testing.T) {
			get(t, path)
			// RFC 9111 sections 4.2.3 and 5.2.2.10: Age beyond max-age, and
			// s-maxage=0 in a shared cache, make the response stale at once.
			if f := get(t, path); hit(f) {
				t.Errorf("second GET %s: Cache-Status %q, want no hit", path, f["Cache-Status"])
			}
		})
	}

	t.Run("no-cache validated", func(t *testing.T) {
		get(t, "/no-cache")
		// RFC 9111 section 5.2.2.4: no-cache needs a validation on each use.
		f := get(t, "/no-cache")
		if hit(f) || !strings.Contains(f["Cache-Status"], "fwd-status=304") {
			t.Errorf("second GET /no-cache: Cache-Status %q, want a validation with a 304 response", f["Cache-Status"])
		}
	})
}
