//go:build integration

package integration

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestL7CacheValidationOnFastPath runs the tidegate binary with a listener
// on the fast path and checks over TCP what RFC 9111 requires of the cache
// there. A matching If-None-Match list gets 304 (RFC 9110 section
// 13.1.2), and Vary matching ignores Accept-Language case (RFC 9111
// section 4.1). A 103 reaches the client but is never stored (section 3),
// and a successful POST invalidates the stored response (section 4.4).
func TestL7CacheValidationOnFastPath(t *testing.T) {
	const fresh = "Cache-Control: max-age=3600\r\n"
	responses := map[string]string{
		"/etag":   "HTTP/1.1 200 OK\r\n" + fresh + "ETag: \"abcdef\"\r\nContent-Length: 4\r\n\r\netag",
		"/lang":   "HTTP/1.1 200 OK\r\n" + fresh + "Vary: Accept-Language\r\nContent-Length: 4\r\n\r\nlang",
		"/early":  "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\nX-Early: 1\r\n\r\nHTTP/1.1 200 OK\r\n" + fresh + "Content-Length: 5\r\n\r\nearly",
		"/target": "HTTP/1.1 200 OK\r\n" + fresh + "Content-Length: 6\r\n\r\ntarget",
	}
	fastAddr := freeAddr(t)
	l := startCacheL7(t, rawCacheBackend(t, responses, nil), fmt.Sprintf(`    - name: fast
      address: %s`, fastAddr))

	// exchange sends one request on a new connection to the fast-path
	// listener and returns the raw response, interim responses included.
	exchange := func(method, path, extra string) string {
		t.Helper()
		return rawHTTP(t, fastAddr, method+" "+path+" HTTP/1.1\r\nHost: "+cacheHost+"\r\nConnection: close\r\n"+extra+"\r\n")
	}
	// final splits off the final response of raw and reports whether it
	// was a hit.
	final := func(name, raw string) (status string, fields []string, body string, hit bool) {
		t.Helper()
		for strings.HasPrefix(raw, "HTTP/1.1 1") {
			_, raw, _ = strings.Cut(raw, "\r\n\r\n")
		}
		status, fields, body = splitResponse(t, name, raw)
		for _, f := range fields {
			if v, ok := strings.CutPrefix(f, "Cache-Status: "); ok {
				hit = strings.HasPrefix(v, "tidegate; hit")
			}
		}
		return status, fields, body, hit
	}

	fastServed := func() float64 {
		v, _ := metricValue(t, l.admin, `tidegate_l7_fast_path_requests_total{listener="fast"}`)
		return v
	}

	t.Run("if-none-match list", func(t *testing.T) {
		exchange(http.MethodGet, "/etag", "")
		before := fastServed()
		status, fields, body, hit := final("etag", exchange(http.MethodGet, "/etag", "If-None-Match: \"1234\", \"abcdef\"\r\n"))
		if served := fastServed() - before; served != 1 {
			t.Errorf("fast path served %v requests, want 1", served)
		}
		if status != "HTTP/1.1 304 Not Modified" {
			t.Errorf("status line = %q, want 304", status)
		}
		if !hit {
			t.Errorf("304 was not a hit: %q", fields)
		}
		if body != "" {
			t.Errorf("304 body = %q, want empty", body)
		}
		found := false
		for _, f := range fields {
			found = found || f == `Etag: "abcdef"` || f == `ETag: "abcdef"`
		}
		if !found {
			t.Errorf("304 fields %q lack the ETag", fields)
		}
	})

	t.Run("vary accept-language case", func(t *testing.T) {
		exchange(http.MethodGet, "/lang", "Accept-Language: en, de\r\n")
		_, fields, body, hit := final("lang", exchange(http.MethodGet, "/lang", "Accept-Language: EN, De\r\n"))
		if !hit || body != "lang" {
			t.Errorf("hit %v body %q, want a hit with lang: %q", hit, body, fields)
		}
		_, _, _, hit = final("lang other", exchange(http.MethodGet, "/lang", "Accept-Language: fr\r\n"))
		if hit {
			t.Errorf("Accept-Language: fr hit the variant stored for en, de")
		}
	})

	t.Run("interim response", func(t *testing.T) {
		raw := exchange(http.MethodGet, "/early", "")
		if !strings.HasPrefix(raw, "HTTP/1.1 103 Early Hints\r\n") || !strings.Contains(raw, "\r\nX-Early: 1\r\n") {
			t.Errorf("miss did not start with the backend's 103: %q", raw)
		}
		status, fields, body, _ := final("early miss", raw)
		if status != "HTTP/1.1 200 OK" || body != "early" {
			t.Errorf("final response %q %q, want 200 early", status, body)
		}
		for _, f := range fields {
			if strings.HasPrefix(f, "X-Early") {
				t.Errorf("final response carries %q from the 103", f)
			}
		}

		raw = exchange(http.MethodGet, "/early", "")
		if strings.HasPrefix(raw, "HTTP/1.1 1") {
			t.Errorf("hit sent an interim response: %q", raw)
		}
		_, fields, body, hit := final("early hit", raw)
		if !hit || body != "early" {
			t.Errorf("hit %v body %q, want a hit with early: %q", hit, body, fields)
		}
		for _, f := range fields {
			if strings.HasPrefix(f, "X-Early") || strings.HasPrefix(f, "Link") {
				t.Errorf("stored response carries %q from the 103", f)
			}
		}
	})

	t.Run("post invalidates", func(t *testing.T) {
		exchange(http.MethodGet, "/target", "")
		if _, _, _, hit := final("target", exchange(http.MethodGet, "/target", "")); !hit {
			t.Fatalf("GET /target was not stored")
		}
		status, _, _, _ := final("post", exchange(http.MethodPost, "/target", "Content-Length: 0\r\n"))
		if status != "HTTP/1.1 200 OK" {
			t.Fatalf("POST status line = %q, want 200", status)
		}
		if _, fields, _, hit := final("target after post", exchange(http.MethodGet, "/target", "")); hit {
			t.Errorf("GET /target after POST was a hit: %q", fields)
		}
	})
}
