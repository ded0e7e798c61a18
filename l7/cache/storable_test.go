package cache

import (
	"net/http"
	"testing"
)

// TestStorable covers each storability rule of RFC 9111 section 3 and
// the directives it refers to.
func TestStorable(t *testing.T) {
	strict := storePolicy{strict: true, heuristic: true}
	lax := storePolicy{strict: false, heuristic: true}
	cookies := storePolicy{strict: true, heuristic: true, storeSetCookie: true}
	tests := []struct {
		name   string
		req    *http.Request
		status int
		h      http.Header
		p      storePolicy
		want   string
	}{
		{"3 GET with max-age", httptestRequest("GET"), 200, header("Cache-Control", "max-age=60"), strict, ""},
		{"3 HEAD with max-age", httptestRequest("HEAD"), 200, header("Cache-Control", "max-age=60"), strict, ""},
		{"3 POST is not stored", httptestRequest("POST"), 200, header("Cache-Control", "max-age=60"), strict, reasonMethod},
		{"3 final status only", httptestRequest("GET"), 103, header("Cache-Control", "max-age=60"), strict, reasonStatus},
		{"3.3 206 not stored without range support", httptestRequest("GET"), 206, header("Cache-Control", "max-age=60", "Content-Range", "bytes 0-1/10"), strict, reasonPartial},
		{"4.3.4 304 is never stored", httptestRequest("GET"), 304, header("Cache-Control", "max-age=60"), strict, reasonStatus},
		{"5.2.2.5 no-store", httptestRequest("GET"), 200, header("Cache-Control", "no-store, max-age=60"), strict, reasonNoStore},
		{"5.2.1.5 request no-store", httptestRequest("GET", "Cache-Control", "no-store"), 200, header("Cache-Control", "max-age=60"), strict, reasonRequestNoStore},
		{"5.2.2.3 must-understand with known status overrides no-store", httptestRequest("GET"), 200, header("Cache-Control", "must-understand, no-store, max-age=60"), strict, ""},
		{"5.2.2.3 must-understand with unknown status", httptestRequest("GET"), 299, header("Cache-Control", "must-understand, no-store, max-age=60"), strict, reasonMustUnderstand},
		{"5.2.2.7 private in a shared cache", httptestRequest("GET"), 200, header("Cache-Control", "private, max-age=60"), strict, reasonPrivate},
		{"5.2.2.7 private stored when not strict", httptestRequest("GET"), 200, header("Cache-Control", "private, max-age=60"), lax, ""},
		{"5.2.2.7 qualified private stores the rest", httptestRequest("GET"), 200, header("Cache-Control", `private="X-User", max-age=60`), strict, ""},
		{"3.5 Authorization without permission", httptestRequest("GET", "Authorization", "Basic eDp5"), 200, header("Cache-Control", "max-age=60"), strict, reasonAuthorization},
		{"3.5 Authorization with public", httptestRequest("GET", "Authorization", "Basic eDp5"), 200, header("Cache-Control", "public, max-age=60"), strict, ""},
		{"3.5 Authorization with s-maxage", httptestRequest("GET", "Authorization", "Basic eDp5"), 200, header("Cache-Control", "s-maxage=60"), strict, ""},
		{"3.5 Authorization with must-revalidate", httptestRequest("GET", "Authorization", "Basic eDp5"), 200, header("Cache-Control", "must-revalidate, max-age=60"), strict, ""},
		{"3 Set-Cookie not stored by default", httptestRequest("GET"), 200, header("Cache-Control", "max-age=60", "Set-Cookie", "a=b"), strict, reasonSetCookie},
		{"3 Set-Cookie stored where configured", httptestRequest("GET"), 200, header("Cache-Control", "max-age=60", "Set-Cookie", "a=b"), cookies, ""},
		{"4.1 Vary star", httptestRequest("GET"), 200, header("Cache-Control", "max-age=60", "Vary", "Accept, *"), strict, reasonVaryStar},
		{"3 302 needs explicit freshness", httptestRequest("GET"), 302, header("Location", "/x"), strict, reasonStatus},
		{"3 302 with Expires", httptestRequest("GET"), 302, header("Expires", httpDate(t0)), strict, ""},
		{"3 500 with public", httptestRequest("GET"), 500, header("Cache-Control", "public"), strict, ""},
		{"3 404 is cacheable by default", httptestRequest("GET"), 404, header("ETag", `"x"`), strict, ""},
		{"3 200 with only a validator", httptestRequest("GET"), 200, header("ETag", `"x"`), strict, ""},
		{"3 200 with nothing to reuse", httptestRequest("GET"), 200, header("Content-Type", "text/plain"), strict, reasonNoFreshness},
		{"5.2.2.4 no-cache needs a validator", httptestRequest("GET"), 200, header("Cache-Control", "no-cache, max-age=60"), strict, reasonNoCacheNoValidator},
		{"5.2.2.4 no-cache with ETag", httptestRequest("GET"), 200, header("Cache-Control", "no-cache", "ETag", `"x"`), strict, ""},
		{"3 trailers are not stored", httptestRequest("GET"), 200, header("Cache-Control", "max-age=60", "Trailer", "X-Checksum"), strict, reasonTrailers},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := storable(tc.req, parseCacheControl(tc.req.Header), tc.status, tc.h, parseCacheControl(tc.h), tc.p)
			if got != tc.want {
				t.Errorf("storable(%s, %d, %v) = %q, want %q", tc.req.Method, tc.status, tc.h, got, tc.want)
			}
		})
	}
}

// TestStoredHeader covers the fields RFC 9111 section 3.1 keeps out of
// storage.
func TestStoredHeader(t *testing.T) {
	h := header(
		"Connection", "X-Hop, close",
		"X-Hop", "1",
		"Keep-Alive", "timeout=5",
		"Transfer-Encoding", "chunked",
		"Proxy-Authenticate", "Basic",
		"Set-Cookie", "a=b",
		"Age", "10",
		"X-User", "alice",
		"Cache-Control", `private="X-User", max-age=60`,
		"Content-Type", "text/plain",
		"ETag", `"e"`,
	)
	got := storedHeader(h, parseCacheControl(h))
	for _, removed := range []string{"Connection", "X-Hop", "Keep-Alive", "Transfer-Encoding", "Proxy-Authenticate", "Set-Cookie", "Age", "X-User"} {
		if v := got.Values(removed); len(v) != 0 {
			t.Errorf("stored header kept %s: %q", removed, v)
		}
	}
	for _, retained := range []string{"Content-Type", "ETag", "Cache-Control"} {
		if got.Get(retained) == "" {
			t.Errorf("stored header lost %s", retained)
		}
	}
	if h.Get("Set-Cookie") == "" {
		t.Error("storedHeader changed its input")
	}
}

// FuzzResponseHeaders feeds arbitrary caching fields through storability,
// entry creation, reuse decisions and a 304 update, checking that nothing
// panics and that lifetimes and ages are never negative.
func FuzzResponseHeaders(f *testing.F) {
	f.Add("max-age=60", "", "", "", "", 200)
	f.Add("s-maxage=x, stale-while-revalidate=5", "Mon, 02 Jan 2006 15:04:05 GMT", "0", "-1", "Accept-Encoding, *", 404)
	f.Add(`private="a,b", no-cache`, "garbage", "Thu, 01 Jan 1970 00:00:00 GMT", "99999999999999999999", "Cookie", 302)
	f.Fuzz(func(t *testing.T, cc, date, expires, age, vary string, status int) {
		if status < 100 || status > 999 {
			return
		}
		h := http.Header{}
		for name, v := range map[string]string{"Cache-Control": cc, "Date": date, "Expires": expires, "Age": age, "Vary": vary, "Last-Modified": date} {
			if v != "" {
				h.Set(name, v)
			}
		}
		req := httptestRequest("GET", "Cache-Control", cc, "Accept-Encoding", vary)
		respCC := parseCacheControl(h)
		_ = storable(req, parseCacheControl(req.Header), status, h, respCC, storePolicy{strict: true, heuristic: true})

		e := newEntry(requestKey{primary: "GET http://h/"}, req, status, storedHeader(h, respCC), nil, newTiming(h, t0, t0), testStorePolicy)
		if e.lifetime < 0 {
			t.Fatalf("lifetime %v < 0 for %v", e.lifetime, h)
		}
		ru := evaluate(e, parseCacheControl(req.Header), t0.Add(90e9), true)
		if ru.age < 0 {
			t.Fatalf("age %v < 0 for %v", ru.age, h)
		}
		_ = staleIfErrorAllowed(e, respCC, t0, true)
		updated := e.freshen(h, t0, t0, testStorePolicy)
		if updated.lifetime < 0 || updated.size <= 0 {
			t.Fatalf("freshen gave lifetime %v size %d", updated.lifetime, updated.size)
		}
	})
}
