package cache

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestConformanceResponseDirectives(t *testing.T) {
	runReuseCases(t, []reuseCase{
		{name: "private", rfc: "RFC 9111 section 5.2.2.7", fields: []string{"Cache-Control: private, max-age=3600"}},
		{name: "no-store", rfc: "RFC 9111 section 5.2.2.5", fields: []string{"Cache-Control: no-store"}},
		{name: "no-store any case", rfc: "RFC 9111 section 5.2.2.5", fields: []string{"Cache-Control: No-StOrE"}},
		{name: "no-store with freshness", rfc: "RFC 9111 section 5.2.2.5", fields: []string{"Cache-Control: max-age=10000, no-store", "Expires: " + clockDate(10000), "Date: " + clockDate(0)}},
		{name: "no-cache with freshness", rfc: "RFC 9111 section 5.2.2.4", fields: []string{"Cache-Control: max-age=10000, no-cache", "Expires: " + clockDate(10000), "Date: " + clockDate(0)}},
		{name: "no-cache any case", rfc: "RFC 9111 section 5.2.2.4", fields: []string{"Cache-Control: max-age=10000, No-CaChE", "Expires: " + clockDate(10000), "Date: " + clockDate(0)}},
		{
			name: "no-cache stored and validated", rfc: "RFC 9111 section 5.2.2.4",
			fields:          []string{"Cache-Control: no-cache", `ETag: "abcd"`},
			wantConditional: `If-None-Match: "abcd"`,
		},
		{
			name: "no-cache with freshness validated", rfc: "RFC 9111 section 5.2.2.4",
			fields:          []string{"Cache-Control: max-age=10000, no-cache", "Expires: " + clockDate(10000), "Date: " + clockDate(0), `ETag: "abcd"`},
			wantConditional: `If-None-Match: "abcd"`,
		},
		{name: "must-revalidate fresh", rfc: "RFC 9111 section 5.2.2.2", fields: []string{"Cache-Control: max-age=10000, must-revalidate", `ETag: "abcd"`}, reused: true},
		{
			name: "must-revalidate stale", rfc: "RFC 9111 section 5.2.2.2",
			fields:          []string{"Cache-Control: max-age=2, must-revalidate", `ETag: "abcd"`},
			advance:         reusePause,
			wantConditional: `If-None-Match: "abcd"`,
		},
		{
			name: "must-revalidate over max-stale", rfc: "RFC 9111 section 5.2.2.2",
			fields:          []string{"Cache-Control: max-age=2, must-revalidate", `ETag: "abcd"`},
			advance:         reusePause,
			request:         []string{"Cache-Control: max-stale=60"},
			wantConditional: `If-None-Match: "abcd"`,
		},
	})
}

func TestConformanceNoStoreLeavesOlderResponse(t *testing.T) {
	clock := newTestClock()
	o := fieldOrigin(t, clock, 0, []string{"Cache-Control: max-age=10000", "Expires: " + clockDate(10000), "Date: " + clockDate(0), "A: 1"})
	p := newTestProxy(t, clock, o, defaultPolicy())
	getManual(t, p, "/r")
	p.waitHandlers()

	o.set(func(w http.ResponseWriter, r *http.Request) {
		writeFields(t, w.Header(), []string{"Cache-Control: no-store", "A: 2"})
		fmt.Fprint(w, "new")
	})
	clock.Advance(reusePause)
	getManual(t, p, "/r")
	clock.Advance(reusePause)
	r := getManual(t, p, "/r")
	if got := r.header.Get("A"); got != "1" {
		t.Errorf("A = %q, want 1 from the stored response (RFC 9111 section 4.2)", got)
	}
	wantRequests(t, o, 1)
}

func TestConformanceStoredFields(t *testing.T) {
	const s31 = "RFC 9111 section 3.1"
	// Fields that are end-to-end: a cache stores them with the response
	// and sends them on reuse.
	endToEnd := []string{
		"Unknown-Field: one",
		"X-Unknown-Field: two",
		"Content-Unknown: three",
		"X-Content-Unknown: four",
		"Content-Encoding: x-private-coding",
		"Content-Location: /other",
		"Content-MD5: AAECAwQFBgcICQoLDA0ODw==",
		"Content-Range: bytes 0-3/4",
		"Content-Security-Policy: default-src 'none'",
		"Content-Type: text/plain; charset=us-ascii",
		"Clear-Site-Data: \"cache\"",
		`ETag: "stored-1"`,
		"Expires: Tue, 19 Jan 2038 03:14:07 GMT",
		"Public-Key-Pins: pin-value",
		"X-Frame-Options: deny",
		"X-XSS-Protection: 0",
	}
	var cases []reuseCase
	for _, f := range endToEnd {
		name, _, _ := strings.Cut(f, ":")
		cases = append(cases, reuseCase{
			name:       "keeps " + name,
			rfc:        s31,
			fields:     []string{"Date: " + clockDate(0), f, "Cache-Control: max-age=3600"},
			advance:    reusePause,
			reused:     true,
			wantFields: []string{f},
		})
	}
	cases = append(cases,
		reuseCase{
			name: "keeps Cache-Control", rfc: s31,
			fields: []string{"Date: " + clockDate(0), "Cache-Control: max-age=3600"}, advance: reusePause, reused: true,
			wantFields: []string{"Cache-Control: max-age=3600"},
		},
		reuseCase{
			name: "drops fields named by Connection", rfc: s31,
			fields:        []string{"Expires: " + clockDate(100000), "Cache-Control: max-age=100000", "Date: " + clockDate(0), "Connection: a, b", "A: 1", "B: 2", "C: 3"},
			advance:       reusePause,
			reused:        true,
			wantFields:    []string{"C: 3"},
			missingFields: []string{"A", "B", "Connection"},
		},
	)
	for _, name := range []string{"Keep-Alive", "Proxy-Authenticate", "Proxy-Authentication-Info", "Proxy-Connection", "Upgrade"} {
		cases = append(cases, reuseCase{
			name:          "drops " + name,
			rfc:           s31,
			fields:        []string{"Date: " + clockDate(0), name + ": test-value", "Cache-Control: max-age=3600"},
			advance:       reusePause,
			reused:        true,
			missingFields: []string{name},
		})
	}
	runReuseCases(t, cases)
}

// TestConformanceStoredHeaderDropsHopByHop checks the cache's own filter,
// since the reverse proxy in front of the origin already removes most
// hop-by-hop fields from the responses the middleware tests see.
func TestConformanceStoredHeaderDropsHopByHop(t *testing.T) {
	for _, name := range []string{
		"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authentication-Info",
		"Proxy-Authorization", "Proxy-Connection", "Te", "Transfer-Encoding", "Upgrade",
	} {
		h := http.Header{}
		h.Set(name, "test-value")
		h.Set("X-Kept", "1")
		got := storedHeader(h, directives{})
		if v := got.Values(name); len(v) > 0 {
			t.Errorf("stored %s = %q, want it dropped (RFC 9111 section 3.1)", name, v)
		}
		if got.Get("X-Kept") != "1" {
			t.Errorf("stored X-Kept = %q beside %s, want 1", got.Get("X-Kept"), name)
		}
	}
}

func TestConformanceOtherReuse(t *testing.T) {
	fresh := []string{"Expires: " + clockDate(100000), "Cache-Control: max-age=100000", "Last-Modified: " + clockDate(0), "Date: " + clockDate(0)}
	expires := []string{"Expires: " + clockDate(30*24*3600), "Date: " + clockDate(0)}
	runReuseCases(t, []reuseCase{
		{name: "Age generated", rfc: "RFC 9111 section 5.1", fields: fresh, advance: reusePause, reused: true, wantFields: []string{"Age: 3"}},
		{name: "Age updated with Expires", rfc: "RFC 9111 section 4.2.3", fields: append(expires, "Age: 30"), advance: reusePause, reused: true, wantFields: []string{"Age: 33"}},
		{name: "Age updated with max-age", rfc: "RFC 9111 section 4.2.3", fields: append(fresh, "Age: 30"), advance: reusePause, reused: true, wantFields: []string{"Age: 33"}},
		{name: "Date kept", rfc: "RFC 9110 section 6.6.1", fields: fresh, advance: reusePause, reused: true, wantFields: []string{"Date: " + clockDate(0)}},
		{name: "Date kept with Expires", rfc: "RFC 9110 section 6.6.1", fields: expires, advance: reusePause, reused: true, wantFields: []string{"Date: " + clockDate(0)}},
		{name: "Expires kept", rfc: "RFC 9111 section 3.1", fields: expires, advance: reusePause, reused: true, wantFields: []string{"Expires: " + clockDate(30*24*3600)}},
		{name: "other query", rfc: "RFC 9111 section 2", path: "/r?test=one", secondPath: "/r?test=two", fields: fresh},
		{name: "same query", rfc: "RFC 9111 section 2", path: "/r?test=one", fields: fresh, reused: true},
		{name: "attachment", rfc: "RFC 9111 section 4.2.1", fields: append(fresh, "Content-Disposition: attachment; filename=example.txt"), reused: true},
		{name: "request Cookie", rfc: "RFC 9111 section 4", fields: fresh, request: []string{"Cookie: a=b"}, reused: true},
	})
}

func TestConformanceAgeIncludesResponseDelay(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		// The origin takes five seconds on the test clock to respond.
		clock.Advance(5 * time.Second)
		fmt.Fprint(w, "slow")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	getManual(t, p, "/r")
	p.waitHandlers()

	r := getManual(t, p, "/r")
	if got := r.header.Get("Age"); got != "5" {
		t.Errorf("Age = %q, want 5: corrected_age_value adds response_delay (RFC 9111 section 4.2.3)", got)
	}
	wantRequests(t, o, 1)
}

// TestConformanceSetCookieResponse checks a fresh response with
// Set-Cookie. RFC 9111 section 3 lets a shared cache store it, but the
// route stores one only with store_set_cookie, and never keeps the cookie.
func TestConformanceSetCookieResponse(t *testing.T) {
	for _, storeCookies := range []bool{false, true} {
		t.Run(fmt.Sprintf("store_set_cookie=%v", storeCookies), func(t *testing.T) {
			clock := newTestClock()
			o := fieldOrigin(t, clock, 0, []string{"Cache-Control: max-age=100000", "Date: " + clockDate(0), "Set-Cookie: a=b"})
			pol := defaultPolicy()
			pol.StoreSetCookie = storeCookies
			p := newTestProxy(t, clock, o, pol)
			getManual(t, p, "/r")
			p.waitHandlers()

			r := getManual(t, p, "/r")
			if storeCookies {
				wantRequests(t, o, 1)
				if got := r.header.Values("Set-Cookie"); len(got) != 0 {
					t.Errorf("reused Set-Cookie = %q, want none", got)
				}
				return
			}
			wantRequests(t, o, 2)
		})
	}
}

// disconnectOrigin closes the connection of every request without a
// response, so the reverse proxy responds with 502.
func disconnectOrigin(w http.ResponseWriter, r *http.Request) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		conn.Close()
	}
}

func TestConformanceStaleForbidden(t *testing.T) {
	// RFC 9111 section 4.2.4: a cache must not serve a stale response
	// that must-revalidate, proxy-revalidate, s-maxage (shared cache) or
	// no-cache forbids serving stale, even when the origin is unreachable.
	for _, directive := range []string{"must-revalidate", "proxy-revalidate", "no-cache", "s-maxage=2"} {
		for _, request := range []string{"", "Cache-Control: max-stale=60"} {
			t.Run(directive+" "+request, func(t *testing.T) {
				clock := newTestClock()
				o := fieldOrigin(t, clock, 0, []string{"Cache-Control: max-age=2, stale-if-error=60, " + directive, `ETag: "abc"`})
				p := newTestProxy(t, clock, o, defaultPolicy())
				first := getManual(t, p, "/r")
				p.waitHandlers()

				o.set(disconnectOrigin)
				clock.Advance(reusePause)
				var fields []string
				if request != "" {
					fields = append(fields, request)
				}
				// The proxy's transport may retry the closed connection,
				// so the origin request count is not checked.
				r := getManual(t, p, "/r", fields...)
				wantStatus(t, r, http.StatusBadGateway)
				if r.body == first.body {
					t.Errorf("body = %q, the stale stored body", r.body)
				}
			})
		}
	}
}

func TestConformanceStaleIfErrorOnDisconnect(t *testing.T) {
	clock := newTestClock()
	o := fieldOrigin(t, clock, 0, []string{"Cache-Control: max-age=2, stale-if-error=60"})
	p := newTestProxy(t, clock, o, defaultPolicy())
	first := getManual(t, p, "/r")
	p.waitHandlers()

	o.set(disconnectOrigin)
	clock.Advance(reusePause)
	r := getManual(t, p, "/r")
	wantStatus(t, r, http.StatusOK)
	if r.body != first.body {
		t.Errorf("body = %q, want the stale %q (RFC 5861 section 4)", r.body, first.body)
	}
}

func TestConformanceStaleIfErrorWindow(t *testing.T) {
	// RFC 5861 section 4: within the stale-if-error window of the response
	// or of the request, the stale response replaces a 500. Past the
	// window, the client receives the 500.
	for _, tc := range []struct {
		name     string
		response string
		request  string
		advance  time.Duration
		status   int
	}{
		{"response window", "max-age=0, stale-if-error=3600", "", 0, http.StatusOK},
		{"response window elapsed", "max-age=0, stale-if-error=1", "", reusePause, http.StatusInternalServerError},
		{"request window", "max-age=0", "Cache-Control: stale-if-error=3600", 0, http.StatusOK},
		{"request window elapsed", "max-age=0", "Cache-Control: stale-if-error=1", reusePause, http.StatusInternalServerError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newTestClock()
			o := fieldOrigin(t, clock, 0, []string{"Cache-Control: " + tc.response})
			p := newTestProxy(t, clock, o, defaultPolicy())
			getManual(t, p, "/r")
			p.waitHandlers()

			o.set(func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "upstream failed", http.StatusInternalServerError)
			})
			clock.Advance(tc.advance)
			var fields []string
			if tc.request != "" {
				fields = append(fields, tc.request)
			}
			r := getManual(t, p, "/r", fields...)
			wantStatus(t, r, tc.status)
			wantRequests(t, o, 2)
		})
	}
}

func TestConformanceStaleWhileRevalidateServesStale(t *testing.T) {
	clock := newTestClock()
	o := fieldOrigin(t, clock, 0, []string{"Cache-Control: max-age=1, stale-while-revalidate=3600", `ETag: "abc"`})
	p := newTestProxy(t, clock, o, defaultPolicy())
	first := getManual(t, p, "/r")
	p.waitHandlers()

	clock.Advance(reusePause)
	r := getManual(t, p, "/r")
	wantCacheStatus(t, r, "hit", "detail=stale-while-revalidate")
	if r.body != first.body {
		t.Errorf("body = %q, want the stale %q (RFC 5861 section 3)", r.body, first.body)
	}
	p.cache.Wait()
	if got := o.lastHeader().Get("If-None-Match"); got != `"abc"` {
		t.Errorf("background refresh If-None-Match = %q, want \"abc\"", got)
	}
}

func TestConformanceStaleWhileRevalidateUpdates(t *testing.T) {
	// The background refresh stores the new response, so a later request
	// gets its fields (RFC 5861 section 3).
	clock := newTestClock()
	o := fieldOrigin(t, clock, 0, []string{"Cache-Control: max-age=0, stale-while-revalidate=3600", `ETag: "abc"`})
	p := newTestProxy(t, clock, o, defaultPolicy())
	getManual(t, p, "/r")
	p.waitHandlers()

	o.set(func(w http.ResponseWriter, r *http.Request) {
		writeFields(t, w.Header(), []string{"Cache-Control: max-age=3600", `ETag: "def"`})
		fmt.Fprint(w, "new")
	})
	clock.Advance(time.Second)
	r := getManual(t, p, "/r")
	if got := r.header.Get("ETag"); got != `"abc"` {
		t.Errorf("stale ETag = %q, want \"abc\"", got)
	}
	p.cache.Wait()
	wantRequests(t, o, 2)

	clock.Advance(reusePause)
	r = getManual(t, p, "/r")
	wantCacheStatus(t, r, "hit")
	if got := r.header.Get("ETag"); got != `"def"` {
		t.Errorf("ETag after the refresh = %q, want \"def\"", got)
	}
	if got := r.header.Get("Cache-Control"); got != "max-age=3600" {
		t.Errorf("Cache-Control after the refresh = %q, want max-age=3600", got)
	}
	wantRequests(t, o, 2)
}

func TestConformanceStaleWhileRevalidateWindowEnds(t *testing.T) {
	// Past the window the stale response is not served (RFC 5861 section
	// 3). The refresh here returns no-cache, so its result is not used
	// without validation either.
	clock := newTestClock()
	var n atomic.Int64
	o := fieldOrigin(t, clock, 0, []string{"Cache-Control: max-age=1, stale-while-revalidate=4", `ETag: "abc"`})
	p := newTestProxy(t, clock, o, defaultPolicy())
	getManual(t, p, "/r")
	p.waitHandlers()

	o.set(func(w http.ResponseWriter, r *http.Request) {
		writeFields(t, w.Header(), []string{"Cache-Control: no-cache", `ETag: "def"`})
		fmt.Fprintf(w, "refresh %d", n.Add(1))
	})
	clock.Advance(reusePause)
	r := getManual(t, p, "/r")
	wantCacheStatus(t, r, "hit", "detail=stale-while-revalidate")
	p.cache.Wait()
	wantRequests(t, o, 2)

	clock.Advance(reusePause)
	r = getManual(t, p, "/r")
	wantRequests(t, o, 3)
	if r.body != "refresh 2" {
		t.Errorf("body past the window = %q, want refresh 2 from the origin", r.body)
	}
}

func TestConformanceRangeNotSatisfiableNotStored(t *testing.T) {
	// A 416 is the response to the request's Range, which the key does not
	// contain, so a stored 416 would reach later requests without that Range.
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		if r.Header.Get("Range") != "" {
			w.Header().Set("Content-Range", "bytes */4")
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		fmt.Fprint(w, "full")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())

	r := getManual(t, p, "/r", "Range: bytes=10-20")
	wantStatus(t, r, http.StatusRequestedRangeNotSatisfiable)
	p.waitHandlers()
	r = getManual(t, p, "/r")
	wantStatus(t, r, http.StatusOK)
	if r.body != "full" {
		t.Errorf("body = %q, want full", r.body)
	}
}
