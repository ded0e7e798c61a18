package cache

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestMiddlewareAgeGrows(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=100")
		fmt.Fprint(w, "hello")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())

	first := p.get(t, "/a")
	wantStatus(t, first, 200)
	wantCacheStatus(t, first, "fwd=uri-miss", "stored", "ttl=100")

	for _, step := range []struct {
		advance time.Duration
		age     string
		ttl     string
	}{
		{10 * time.Second, "10", "ttl=90"},
		{30 * time.Second, "40", "ttl=60"},
		{59 * time.Second, "99", "ttl=1"},
	} {
		clock.Advance(step.advance)
		r := p.get(t, "/a")
		wantStatus(t, r, 200)
		if r.body != "hello" {
			t.Errorf("body = %q, want %q", r.body, "hello")
		}
		if got := r.header.Get("Age"); got != step.age {
			t.Errorf("Age = %q, want %q", got, step.age)
		}
		wantCacheStatus(t, r, "tidegate; hit", step.ttl)
	}
	wantRequests(t, o, 1)
	if got := p.counter(t, "tidegate_l7_cache_hits_total", map[string]string{"route": "test"}); got != 3 {
		t.Errorf("hits_total = %v, want 3", got)
	}

	// At 100 seconds the response is stale and goes upstream again.
	clock.Advance(time.Second)
	r := p.get(t, "/a")
	wantCacheStatus(t, r, "fwd=stale")
	wantRequests(t, o, 2)
}

func TestMiddlewareAgeIncludesUpstreamAge(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=100")
		w.Header().Set("Age", "30")
		fmt.Fprint(w, "aged")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/aged")
	clock.Advance(5 * time.Second)

	r := p.get(t, "/aged")
	if got := r.header.Get("Age"); got != "35" {
		t.Errorf("Age = %q, want 35 (RFC 9111 section 4.2.3: corrected Age plus resident time)", got)
	}
	wantCacheStatus(t, r, "hit", "ttl=65")
}

func TestMiddlewareRevalidate304UpdatesHeaders(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("X-Version", "1")
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, "body-v1")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/r")

	o.set(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("If-None-Match") != `"v1"` {
			t.Errorf("revalidation If-None-Match = %q, want %q", r.Header.Get("If-None-Match"), `"v1"`)
		}
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("X-Version", "2")
		w.WriteHeader(http.StatusNotModified)
	})
	clock.Advance(20 * time.Second)
	r := p.get(t, "/r")
	wantStatus(t, r, 200)
	if r.body != "body-v1" {
		t.Errorf("body = %q, want the stored body-v1", r.body)
	}
	if got := r.header.Get("X-Version"); got != "2" {
		t.Errorf("X-Version = %q, want 2 from the 304 (RFC 9111 section 4.3.4)", got)
	}
	if got := r.header.Get("Content-Type"); got != "text/plain" {
		t.Errorf("Content-Type = %q, want the stored text/plain", got)
	}
	wantCacheStatus(t, r, "fwd=stale", "fwd-status=304", "ttl=60")
	wantRequests(t, o, 2)

	// The new max-age=60 from the 304 now governs freshness.
	clock.Advance(50 * time.Second)
	r = p.get(t, "/r")
	wantCacheStatus(t, r, "hit")
	if got := r.header.Get("X-Version"); got != "2" {
		t.Errorf("X-Version after the update = %q, want 2", got)
	}
	wantRequests(t, o, 2)
	if got := p.counter(t, "tidegate_l7_cache_revalidations_total", map[string]string{"result": "not_modified"}); got != 1 {
		t.Errorf("revalidations_total{result=not_modified} = %v, want 1", got)
	}
}

func TestMiddlewareRevalidateWithLastModified(t *testing.T) {
	clock := newTestClock()
	lastModified := clock.Now().Add(-time.Hour).Format(http.TimeFormat)
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=5")
		w.Header().Set("Last-Modified", lastModified)
		fmt.Fprint(w, "lm")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/lm")
	clock.Advance(10 * time.Second)

	o.set(func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get("If-Modified-Since"); got != lastModified {
			t.Errorf("If-Modified-Since = %q, want %q", got, lastModified)
		}
		w.WriteHeader(http.StatusNotModified)
	})
	r := p.get(t, "/lm")
	if r.body != "lm" {
		t.Errorf("body = %q, want lm", r.body)
	}
	wantCacheStatus(t, r, "fwd-status=304")
}

func TestMiddlewareRevalidateNewBodyReplaces(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("ETag", `"v1"`)
		fmt.Fprint(w, "one")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/n")
	clock.Advance(20 * time.Second)
	o.set(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("ETag", `"v2"`)
		fmt.Fprint(w, "two")
	})
	if r := p.get(t, "/n"); r.body != "two" {
		t.Fatalf("body after change = %q, want two", r.body)
	}
	r := p.get(t, "/n")
	if r.body != "two" {
		t.Errorf("stored body = %q, want two", r.body)
	}
	wantCacheStatus(t, r, "hit")
	wantRequests(t, o, 2)
}

func TestMiddlewareStaleIfError(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10, stale-if-error=600")
		fmt.Fprint(w, "good")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/e")

	o.set(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	})
	clock.Advance(60 * time.Second)
	r := p.get(t, "/e")
	wantStatus(t, r, 200)
	if r.body != "good" {
		t.Errorf("body while origin returns 503 = %q, want the stale good", r.body)
	}
	if got := r.header.Get("Age"); got != "60" {
		t.Errorf("Age = %q, want 60", got)
	}
	wantCacheStatus(t, r, "fwd=stale", "fwd-status=503", "detail=stale-if-error")
	wantRequests(t, o, 2)

	// A closed origin reaches the cache as the proxy's 502.
	o.srv.Close()
	r = p.get(t, "/e")
	wantStatus(t, r, 200)
	if r.body != "good" {
		t.Errorf("body with the origin down = %q, want good", r.body)
	}
	wantCacheStatus(t, r, "fwd-status=502")

	// Past the stale-if-error window the error goes through.
	clock.Advance(600 * time.Second)
	r = p.get(t, "/e")
	wantStatus(t, r, http.StatusBadGateway)
	if got := p.counter(t, "tidegate_l7_cache_stale_served_total", map[string]string{"reason": "stale_if_error"}); got != 2 {
		t.Errorf("stale_served_total{reason=stale_if_error} = %v, want 2", got)
	}
}

func TestMiddlewareStaleIfErrorForbiddenByMustRevalidate(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10, stale-if-error=600, must-revalidate")
		fmt.Fprint(w, "good")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/m")
	o.set(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	})
	clock.Advance(20 * time.Second)
	wantStatus(t, p.get(t, "/m"), http.StatusServiceUnavailable)
}

func TestMiddlewareStaleIfErrorRequestDirective(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("ETag", `"x"`)
		fmt.Fprint(w, "good")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/q")
	o.set(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusInternalServerError)
	})
	clock.Advance(20 * time.Second)
	wantStatus(t, p.get(t, "/q"), http.StatusInternalServerError)
	r := p.get(t, "/q", "Cache-Control: stale-if-error=60")
	wantStatus(t, r, 200)
	if r.body != "good" {
		t.Errorf("body = %q, want good", r.body)
	}
}

func TestMiddlewareStaleWhileRevalidate(t *testing.T) {
	clock := newTestClock()
	var version atomic.Int64
	version.Store(1)
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10, stale-while-revalidate=60")
		fmt.Fprintf(w, "v%d", version.Load())
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/s")

	version.Store(2)
	clock.Advance(15 * time.Second)
	r := p.get(t, "/s")
	if r.body != "v1" {
		t.Errorf("body in the stale-while-revalidate window = %q, want the stale v1", r.body)
	}
	wantCacheStatus(t, r, "hit", "ttl=-5", "detail=stale-while-revalidate")

	p.cache.Wait()
	wantRequests(t, o, 2)
	r = p.get(t, "/s")
	if r.body != "v2" {
		t.Errorf("body after the background refresh = %q, want v2", r.body)
	}
	wantCacheStatus(t, r, "hit")
	wantRequests(t, o, 2)

	// Past the window the request waits for the upstream.
	version.Store(3)
	clock.Advance(100 * time.Second)
	r = p.get(t, "/s")
	if r.body != "v3" {
		t.Errorf("body past the window = %q, want v3", r.body)
	}
	wantCacheStatus(t, r, "fwd=stale")
}

func TestMiddlewareStaleWhileRevalidateRefreshesOnce(t *testing.T) {
	clock := newTestClock()
	release := make(chan struct{})
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10, stale-while-revalidate=60")
		fmt.Fprint(w, "x")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/once")
	o.set(func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.Header().Set("Cache-Control", "max-age=10, stale-while-revalidate=60")
		fmt.Fprint(w, "y")
	})
	clock.Advance(15 * time.Second)
	for range 5 {
		if r := p.get(t, "/once"); r.body != "x" {
			t.Errorf("stale body = %q, want x", r.body)
		}
	}
	close(release)
	p.cache.Wait()
	wantRequests(t, o, 2)
}

func TestMiddlewareCoalescesConcurrentMisses(t *testing.T) {
	clock := newTestClock()
	release := make(chan struct{})
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "shared")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())

	const clients = 50
	var wg sync.WaitGroup
	results := make([]result, clients)
	for i := range clients {
		wg.Go(func() { results[i] = p.get(t, "/cold") })
	}

	// Release the origin only once one request leads and 49 wait for it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.cache.flights.mu.Lock()
		var waiting int32
		for _, fl := range p.cache.flights.m {
			waiting += fl.waiters.Load()
		}
		p.cache.flights.mu.Unlock()
		if waiting == clients-1 && o.requests.Load() == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %d requests waiting and %d at the origin, want 49 and 1", waiting, o.requests.Load())
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()

	wantRequests(t, o, 1)
	collapsed := 0
	for i, r := range results {
		if r.status != 200 || r.body != "shared" {
			t.Errorf("client %d: status %d body %q, want 200 shared", i, r.status, r.body)
		}
		if strings.Contains(r.header.Get("Cache-Status"), "collapsed") {
			collapsed++
		}
	}
	if collapsed != clients-1 {
		t.Errorf("%d responses marked collapsed, want %d", collapsed, clients-1)
	}
}

func TestMiddlewareCoalesceTimeout(t *testing.T) {
	clock := newTestClock()
	release := make(chan struct{})
	var first atomic.Bool
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		if first.CompareAndSwap(false, true) {
			<-release
		}
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "ok")
	})
	pol := defaultPolicy()
	pol.CoalesceTimeout = 20 * time.Millisecond
	p := newTestProxy(t, clock, o, pol)

	done := make(chan result)
	go func() { done <- p.get(t, "/slow") }()
	for o.requests.Load() != 1 {
		time.Sleep(time.Millisecond)
	}
	// The second request gives up waiting and goes upstream itself while
	// the first is still blocked.
	r := p.get(t, "/slow")
	wantStatus(t, r, 200)
	wantRequests(t, o, 2)
	close(release)
	<-done
}

func TestMiddlewareAuthorizationNotShared(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		if r.Header.Get("Authorization") != "" {
			fmt.Fprint(w, "secret for alice")
			return
		}
		fmt.Fprint(w, "public page")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())

	r := p.get(t, "/account", "Authorization: Bearer alice")
	if r.body != "secret for alice" {
		t.Fatalf("body = %q", r.body)
	}
	wantCacheStatus(t, r, "detail=authorization")

	r = p.get(t, "/account")
	if r.body != "public page" {
		t.Errorf("anonymous client got %q, want public page (RFC 9111 section 3.5)", r.body)
	}
	wantRequests(t, o, 2)
}

func TestMiddlewareAuthorizationWithPublicStored(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=60")
		fmt.Fprint(w, "same for all")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/doc", "Authorization: Bearer alice")
	r := p.get(t, "/doc")
	wantCacheStatus(t, r, "hit")
	wantRequests(t, o, 1)
}

func TestMiddlewareSetCookieNeverShared(t *testing.T) {
	for _, storeCookies := range []bool{false, true} {
		t.Run(fmt.Sprintf("store_set_cookie=%v", storeCookies), func(t *testing.T) {
			clock := newTestClock()
			var n atomic.Int64
			o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=60")
				http.SetCookie(w, &http.Cookie{Name: "session", Value: fmt.Sprintf("s%d", n.Add(1))})
				fmt.Fprint(w, "page")
			})
			pol := defaultPolicy()
			pol.StoreSetCookie = storeCookies
			p := newTestProxy(t, clock, o, pol)

			alice := p.get(t, "/login")
			if got := alice.header.Get("Set-Cookie"); !strings.Contains(got, "session=s1") {
				t.Fatalf("first client Set-Cookie = %q, want session=s1", got)
			}
			bob := p.get(t, "/login")
			for _, c := range bob.header.Values("Set-Cookie") {
				if strings.Contains(c, "session=s1") {
					t.Fatalf("second client received the first client's cookie %q", c)
				}
			}
			if storeCookies {
				wantCacheStatus(t, bob, "hit")
				if len(bob.header.Values("Set-Cookie")) != 0 {
					t.Errorf("hit carried Set-Cookie %q", bob.header.Values("Set-Cookie"))
				}
				wantRequests(t, o, 1)
			} else {
				wantCacheStatus(t, alice, "detail=set-cookie")
				if got := bob.header.Get("Set-Cookie"); !strings.Contains(got, "session=s2") {
					t.Errorf("second client Set-Cookie = %q, want its own session=s2", got)
				}
				wantRequests(t, o, 2)
			}
		})
	}
}

func TestMiddlewareHostsNeverShare(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, "site %s", r.Host)
	})
	p := newTestProxy(t, clock, o, defaultPolicy())

	a := p.get(t, "/index.html", "Host: a.example")
	b := p.get(t, "/index.html", "Host: b.example")
	if a.body != "site a.example" || b.body != "site b.example" {
		t.Fatalf("bodies = %q, %q", a.body, b.body)
	}
	wantRequests(t, o, 2)

	a = p.get(t, "/index.html", "Host: A.example:80")
	if a.body != "site a.example" {
		t.Errorf("a.example:80 got %q, want the a.example entry", a.body)
	}
	wantCacheStatus(t, a, "hit")
	b = p.get(t, "/index.html", "Host: b.example")
	if b.body != "site b.example" {
		t.Errorf("b.example got %q", b.body)
	}
	c := p.get(t, "/index.html", "Host: a.example:8080")
	if c.body != "site a.example:8080" {
		t.Errorf("a.example:8080 got %q, want its own response", c.body)
	}
	wantRequests(t, o, 3)
}

func TestMiddlewareVary(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "Accept-Language")
		fmt.Fprintf(w, "lang=%s", r.Header.Get("Accept-Language"))
	})
	p := newTestProxy(t, clock, o, defaultPolicy())

	en := p.get(t, "/v", "Accept-Language: en")
	fr := p.get(t, "/v", "Accept-Language: fr")
	wantCacheStatus(t, fr, "fwd=vary-miss")
	if en.body != "lang=en" || fr.body != "lang=fr" {
		t.Fatalf("bodies = %q, %q", en.body, fr.body)
	}
	again := p.get(t, "/v", "Accept-Language: fr")
	if again.body != "lang=fr" {
		t.Errorf("fr again = %q", again.body)
	}
	wantCacheStatus(t, again, "hit")
	wantRequests(t, o, 2)
}

func TestMiddlewareVaryAcceptEncodingNormalised(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "Accept-Encoding")
		coding := negotiateEncoding(r.Header)
		if coding != "identity" {
			w.Header().Set("Content-Encoding", coding)
		}
		fmt.Fprintf(w, "coded as %s", coding)
	})
	p := newTestProxy(t, clock, o, defaultPolicy())

	for _, tc := range []struct {
		acceptEncoding string
		want           string
		requests       int64
	}{
		{"gzip, br", "coded as br", 1},
		{"br;q=1.0, gzip;q=0.5", "coded as br", 1},
		{"gzip", "coded as gzip", 2},
		{"gzip;q=1, deflate", "coded as gzip", 2},
		{"identity", "coded as identity", 3},
		{"br;q=0", "coded as identity", 3},
	} {
		r := p.get(t, "/enc", "Accept-Encoding: "+tc.acceptEncoding)
		if r.body != tc.want {
			t.Errorf("Accept-Encoding %q: body %q, want %q", tc.acceptEncoding, r.body, tc.want)
		}
		wantRequests(t, o, tc.requests)
	}
}

func TestMiddlewareVaryStarNotStored(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "*")
		fmt.Fprint(w, "x")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	wantCacheStatus(t, p.get(t, "/star"), "detail=vary-star")
	p.get(t, "/star")
	wantRequests(t, o, 2)
}

func TestMiddlewareUnsafeInvalidates(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			w.Header().Set("Location", r.Header.Get("X-Location"))
			w.Header().Set("Content-Location", r.Header.Get("X-Content-Location"))
			w.WriteHeader(http.StatusCreated)
			return
		}
		w.Header().Set("Cache-Control", "max-age=600")
		fmt.Fprintf(w, "%s", r.URL.Path)
	})
	p := newTestProxy(t, clock, o, defaultPolicy())

	paths := []string{"/items", "/items/7", "/items/8", "/other"}
	for _, path := range paths {
		p.get(t, path)
	}
	wantRequests(t, o, 4)

	r := p.do(t, http.MethodPost, "/items", "X-Location: /items/7",
		"X-Content-Location: http://elsewhere.example/items/8")
	wantStatus(t, r, http.StatusCreated)
	wantCacheStatus(t, r, "fwd=method")
	wantRequests(t, o, 5)

	for _, tc := range []struct {
		path string
		fwd  bool
	}{
		{"/items", true},   // the target URI
		{"/items/7", true}, // same-origin Location
		{"/items/8", false},
		{"/other", false},
	} {
		r := p.get(t, tc.path)
		gotFwd := !strings.Contains(r.header.Get("Cache-Status"), "hit")
		if gotFwd != tc.fwd {
			t.Errorf("GET %s after POST: Cache-Status %q, want forwarded=%v", tc.path, r.header.Get("Cache-Status"), tc.fwd)
		}
	}
}

func TestMiddlewareFailedUnsafeKeepsEntry(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodDelete {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		w.Header().Set("Cache-Control", "max-age=600")
		fmt.Fprint(w, "kept")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/k")
	wantStatus(t, p.do(t, http.MethodDelete, "/k"), http.StatusForbidden)
	wantCacheStatus(t, p.get(t, "/k"), "hit")
}

func TestMiddlewareOnlyIfCached(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10")
		fmt.Fprint(w, "x")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())

	r := p.get(t, "/oic", "Cache-Control: only-if-cached")
	wantStatus(t, r, http.StatusGatewayTimeout)
	wantRequests(t, o, 0)

	p.get(t, "/oic")
	r = p.get(t, "/oic", "Cache-Control: only-if-cached")
	wantStatus(t, r, 200)
	wantCacheStatus(t, r, "hit")

	clock.Advance(20 * time.Second)
	r = p.get(t, "/oic", "Cache-Control: only-if-cached")
	wantStatus(t, r, http.StatusGatewayTimeout)
	r = p.get(t, "/oic", "Cache-Control: only-if-cached, max-stale")
	wantStatus(t, r, 200)
	wantRequests(t, o, 1)
}

func TestMiddlewareRequestDirectives(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=100")
		w.Header().Set("ETag", `"e"`)
		fmt.Fprint(w, "x")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/d")
	clock.Advance(50 * time.Second)

	tests := []struct {
		name  string
		field string
		hit   bool
	}{
		{"no-cache revalidates", "Cache-Control: no-cache", false},
		{"max-age above age", "Cache-Control: max-age=60", true},
		{"max-age below age", "Cache-Control: max-age=30", false},
		{"min-fresh satisfied", "Cache-Control: min-fresh=10", true},
		{"min-fresh unmet", "Cache-Control: min-fresh=90", false},
		{"pragma no-cache alone", "Pragma: no-cache", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Reset the entry's age between cases.
			p.cache.store.remove(primaryKey("http", strings.TrimPrefix(p.srv.URL, "http://"), "/d", ""))
			p.get(t, "/d")
			clock.Advance(50 * time.Second)
			r := p.get(t, "/d", tc.field)
			gotHit := strings.Contains(r.header.Get("Cache-Status"), "hit")
			if gotHit != tc.hit {
				t.Errorf("%s: Cache-Status %q, want hit=%v", tc.field, r.header.Get("Cache-Status"), tc.hit)
			}
		})
	}

	before := o.requests.Load()
	r := p.get(t, "/d", "Cache-Control: no-store")
	wantCacheStatus(t, r, "fwd=request")
	wantRequests(t, o, before+1)
}

func TestMiddlewareResponseNoCacheRevalidatesEveryTime(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache, max-age=600")
		w.Header().Set("ETag", `"nc"`)
		if r.Header.Get("If-None-Match") == `"nc"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		fmt.Fprint(w, "x")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/nc")
	r := p.get(t, "/nc")
	wantCacheStatus(t, r, "fwd=request", "fwd-status=304")
	if r.body != "x" {
		t.Errorf("body = %q, want x", r.body)
	}
	wantRequests(t, o, 2)

	lax := defaultPolicy()
	lax.Strict = false
	p2 := newTestProxy(t, clock, o, lax)
	p2.get(t, "/nc")
	wantCacheStatus(t, p2.get(t, "/nc"), "hit")
}

func TestMiddlewarePrivateAndNoStore(t *testing.T) {
	for _, cc := range []string{"private, max-age=60", "no-store, max-age=60"} {
		t.Run(cc, func(t *testing.T) {
			clock := newTestClock()
			o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", cc)
				fmt.Fprint(w, "mine")
			})
			p := newTestProxy(t, clock, o, defaultPolicy())
			p.get(t, "/p")
			p.get(t, "/p")
			wantRequests(t, o, 2)
		})
	}
}

func TestMiddlewareQualifiedPrivateStripsField(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", `private="X-User", max-age=60`)
		w.Header().Set("X-User", "alice")
		fmt.Fprint(w, "page")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	if got := p.get(t, "/qp").header.Get("X-User"); got != "alice" {
		t.Errorf("first response X-User = %q, want alice", got)
	}
	r := p.get(t, "/qp")
	wantCacheStatus(t, r, "hit")
	if got := r.header.Get("X-User"); got != "" {
		t.Errorf("stored response carried X-User %q (RFC 9111 section 5.2.2.7)", got)
	}
}

func TestMiddlewareClientConditional(t *testing.T) {
	clock := newTestClock()
	lastModified := clock.Now().Add(-time.Hour)
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("ETag", `W/"tag"`)
		w.Header().Set("Last-Modified", lastModified.Format(http.TimeFormat))
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, "full body")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())

	// On a miss the cache fetches the full body, stores it and still
	// evaluates the client's validator.
	r := p.get(t, "/c", `If-None-Match: "tag"`)
	wantStatus(t, r, http.StatusNotModified)
	if o.lastHeader().Get("If-None-Match") != "" {
		t.Errorf("origin saw the client's If-None-Match; want it removed so the response is storable")
	}
	wantCacheStatus(t, r, "stored")

	tests := []struct {
		name   string
		field  string
		status int
	}{
		{"etag match", `If-None-Match: "other", W/"tag"`, 304},
		{"etag star", `If-None-Match: *`, 304},
		{"etag mismatch", `If-None-Match: "other"`, 200},
		{"ims after last-modified", "If-Modified-Since: " + clock.Now().Format(http.TimeFormat), 304},
		{"ims before last-modified", "If-Modified-Since: " + lastModified.Add(-time.Minute).Format(http.TimeFormat), 200},
		{"ims invalid", "If-Modified-Since: yesterday", 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := p.get(t, "/c", tc.field)
			wantStatus(t, r, tc.status)
			wantCacheStatus(t, r, "hit")
			if tc.status == 304 {
				if r.body != "" {
					t.Errorf("304 body = %q, want empty", r.body)
				}
				if r.header.Get("ETag") != `W/"tag"` {
					t.Errorf("304 ETag = %q", r.header.Get("ETag"))
				}
				if r.header.Get("Content-Type") != "" {
					t.Errorf("304 carried Content-Type %q", r.header.Get("Content-Type"))
				}
			}
		})
	}
	wantRequests(t, o, 1)
}

func TestMiddlewareHead(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Length", "4")
		if r.Method != http.MethodHead {
			fmt.Fprint(w, "body")
		}
	})
	p := newTestProxy(t, clock, o, defaultPolicy())

	// A HEAD response is stored for HEAD only.
	wantStatus(t, p.do(t, http.MethodHead, "/h"), 200)
	if r := p.do(t, http.MethodHead, "/h"); !strings.Contains(r.header.Get("Cache-Status"), "hit") {
		t.Errorf("second HEAD Cache-Status = %q, want hit", r.header.Get("Cache-Status"))
	}
	r := p.get(t, "/h")
	if r.body != "body" {
		t.Errorf("GET after HEAD body = %q, want body", r.body)
	}
	wantCacheStatus(t, r, "fwd=")
	wantRequests(t, o, 2)

	// The stored GET response now serves HEAD.
	r = p.do(t, http.MethodHead, "/h")
	wantCacheStatus(t, r, "hit")
	if r.header.Get("Content-Length") != "4" {
		t.Errorf("HEAD Content-Length = %q, want 4", r.header.Get("Content-Length"))
	}
	wantRequests(t, o, 2)
}

func TestMiddlewareLargeResponseStreamedNotStored(t *testing.T) {
	clock := newTestClock()
	big := strings.Repeat("0123456789abcdef", 8<<10) // 128 KiB
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		if r.URL.Query().Get("cl") == "1" {
			w.Header().Set("Content-Length", fmt.Sprint(len(big)))
		}
		// Write in pieces so no Content-Length is set unless asked.
		for i := 0; i < len(big); i += 4096 {
			io.WriteString(w, big[i:i+4096])
		}
	})
	pol := defaultPolicy()
	pol.MaxEntrySize = 16 << 10
	p := newTestProxy(t, clock, o, pol)

	for _, path := range []string{"/big", "/big?cl=1"} {
		r := p.get(t, path)
		if r.body != big {
			t.Fatalf("%s: body of %d bytes, want %d", path, len(r.body), len(big))
		}
		r = p.get(t, path)
		if r.body != big {
			t.Fatalf("%s again: body of %d bytes, want %d", path, len(r.body), len(big))
		}
		wantCacheStatus(t, r, "fwd=uri-miss")
	}
	wantRequests(t, o, 4)
	// Without a Content-Length the count is taken once the handler has
	// written the whole body, which can be after the client has read it.
	labels := map[string]string{"reason": reasonTooLarge}
	deadline := time.Now().Add(5 * time.Second)
	for p.counter(t, "tidegate_l7_cache_not_stored_total", labels) < 4 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := p.counter(t, "tidegate_l7_cache_not_stored_total", labels); got != 4 {
		t.Errorf("not_stored_total{reason=too-large} = %v, want 4", got)
	}
	if _, n := p.cache.Stats(); n != 0 {
		t.Errorf("entries = %d, want 0", n)
	}
}

func TestMiddlewareHeuristicFreshness(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Last-Modified", clock.Now().Add(-100*time.Minute).Format(http.TimeFormat))
		fmt.Fprint(w, "h")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	wantCacheStatus(t, p.get(t, "/heur"), "stored", "ttl=600")
	clock.Advance(9 * time.Minute)
	wantCacheStatus(t, p.get(t, "/heur"), "hit")

	off := defaultPolicy()
	off.Heuristic = false
	p2 := newTestProxy(t, clock, o, off)
	p2.get(t, "/heur2")
	r := p2.get(t, "/heur2")
	wantCacheStatus(t, r, "fwd=stale", "fwd-status=200", "ttl=0")
}

func TestMiddlewareExtraKeyParts(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		c, _ := r.Cookie("tenant")
		name := ""
		if c != nil {
			name = c.Value
		}
		fmt.Fprintf(w, "tenant=%s plan=%s", name, r.Header.Get("X-Plan"))
	})
	pol := defaultPolicy()
	pol.KeyParts = []string{"cookie:tenant", "header:X-Plan"}
	p := newTestProxy(t, clock, o, pol)

	a := p.get(t, "/k", "Cookie: tenant=a", "X-Plan: gold")
	b := p.get(t, "/k", "Cookie: tenant=b", "X-Plan: gold")
	if a.body == b.body {
		t.Fatalf("tenants a and b got the same body %q", a.body)
	}
	again := p.get(t, "/k", "Cookie: other=1; tenant=a", "X-Plan: gold")
	if again.body != "tenant=a plan=gold" {
		t.Errorf("tenant a again = %q", again.body)
	}
	wantCacheStatus(t, again, "hit")
	wantRequests(t, o, 2)
}

func TestMiddlewareUncacheableStatus(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/302":
			w.Header().Set("Location", "/x")
			w.WriteHeader(http.StatusFound)
		case "/302-explicit":
			w.Header().Set("Cache-Control", "max-age=60")
			w.Header().Set("Location", "/x")
			w.WriteHeader(http.StatusFound)
		case "/404":
			w.Header().Set("Cache-Control", "max-age=60")
			http.NotFound(w, r)
		}
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	noRedirect := p.srv.Client()
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	wantCacheStatus(t, p.get(t, "/302"), "detail=status")
	wantCacheStatus(t, p.get(t, "/302-explicit"), "stored")
	wantCacheStatus(t, p.get(t, "/302-explicit"), "hit")
	wantCacheStatus(t, p.get(t, "/404"), "stored")
	r := p.get(t, "/404")
	wantStatus(t, r, 404)
	wantCacheStatus(t, r, "hit")
}

func TestMiddlewareDisabledPolicyPassesThrough(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "x")
	})
	pol := defaultPolicy()
	pol.Enabled = false
	p := newTestProxy(t, clock, o, pol)
	r := p.get(t, "/off")
	if cs := r.header.Get("Cache-Status"); cs != "" {
		t.Errorf("disabled route added Cache-Status %q", cs)
	}
	p.get(t, "/off")
	wantRequests(t, o, 2)
}

func TestMiddlewareRangeFromStoredBody(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("ETag", `"r"`)
		fmt.Fprint(w, "0123456789")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/range")

	r := p.get(t, "/range", "Range: bytes=2-5")
	wantStatus(t, r, http.StatusPartialContent)
	if r.body != "2345" {
		t.Errorf("range body = %q, want 2345", r.body)
	}
	if got := r.header.Get("Content-Range"); got != "bytes 2-5/10" {
		t.Errorf("Content-Range = %q, want bytes 2-5/10", got)
	}
	wantCacheStatus(t, r, "hit")

	r = p.get(t, "/range", "Range: bytes=2-5", `If-Range: "other"`)
	wantStatus(t, r, 200)
	if r.body != "0123456789" {
		t.Errorf("If-Range mismatch body = %q, want the full body", r.body)
	}
	wantRequests(t, o, 1)
}

func TestMiddlewareBypassesRiskyRequests(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, "method override %q", r.Header.Get("X-HTTP-Method-Override"))
	})
	p := newTestProxy(t, clock, o, defaultPolicy())

	r := p.get(t, "/risky", "X-HTTP-Method-Override: POST")
	wantCacheStatus(t, r, "fwd=bypass")
	r = p.get(t, "/risky")
	if r.body != `method override ""` {
		t.Errorf("plain GET got %q, want the response to a plain GET", r.body)
	}

	req, err := http.NewRequest(http.MethodGet, p.srv.URL+"/fat", strings.NewReader("q=1"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := p.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cs := resp.Header.Get("Cache-Status"); !strings.Contains(cs, "fwd=bypass") {
		t.Errorf("GET with a body: Cache-Status %q, want fwd=bypass", cs)
	}
}

func TestMiddlewareSetCookieIn304NotStored(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("ETag", `"c"`)
		fmt.Fprint(w, "x")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/c304")
	o.set(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("Set-Cookie", "refresh=alice")
		w.WriteHeader(http.StatusNotModified)
	})
	clock.Advance(20 * time.Second)
	alice := p.get(t, "/c304")
	if got := alice.header.Get("Set-Cookie"); got != "refresh=alice" {
		t.Errorf("revalidating client Set-Cookie = %q, want refresh=alice", got)
	}
	bob := p.get(t, "/c304")
	wantCacheStatus(t, bob, "hit")
	if got := bob.header.Get("Set-Cookie"); got != "" {
		t.Errorf("next client received Set-Cookie %q from the 304", got)
	}
}

func TestMiddlewareSchemesNeverShare(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, "proto=%s", r.Header.Get("X-Forwarded-Proto"))
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	tlsFront := httptest.NewTLSServer(p.srv.Config.Handler)
	t.Cleanup(tlsFront.Close)

	p.get(t, "/s", "Host: shop.example")
	req, err := http.NewRequest(http.MethodGet, tlsFront.URL+"/s", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "shop.example"
	resp, err := tlsFront.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cs := resp.Header.Get("Cache-Status"); !strings.Contains(cs, "fwd=uri-miss") {
		t.Errorf("https request Cache-Status = %q, want a miss separate from http", cs)
	}
	wantRequests(t, o, 2)
}

func TestMiddlewareEvictsToBudget(t *testing.T) {
	clock := newTestClock()
	body := strings.Repeat("b", 10<<10)
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		fmt.Fprint(w, body)
	})
	p := newTestProxyWithBudget(t, clock, o, defaultPolicy(), 64<<10)
	c := p.cache

	for i := range 20 {
		p.get(t, fmt.Sprintf("/e/%d", i))
	}
	size, entries := c.Stats()
	if size > 64<<10 {
		t.Errorf("size = %d, want at most the 64 KiB budget", size)
	}
	if entries < 4 || entries > 6 {
		t.Errorf("entries = %d, want 4 to 6 entries of about 10 KiB in 64 KiB", entries)
	}
	if got := p.counter(t, "tidegate_l7_cache_evictions_total", nil); int(got) != 20-entries {
		t.Errorf("evictions_total = %v, want %d", got, 20-entries)
	}
	if got := p.counter(t, "tidegate_l7_cache_entries", nil); int(got) != entries {
		t.Errorf("entries gauge = %v, want %d", got, entries)
	}
	// The most recent entry survives, the first one was evicted.
	wantCacheStatus(t, p.get(t, "/e/19"), "hit")
	wantCacheStatus(t, p.get(t, "/e/0"), "fwd=uri-miss")
}

func TestMiddlewareTruncatedBodyNotStored(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60, stale-while-revalidate=60")
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(200)
		io.WriteString(w, "only ten b")
		// Closing the connection early makes the proxy abort the body.
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	p := newTestProxy(t, clock, o, defaultPolicy())

	req, err := http.NewRequest(http.MethodGet, p.srv.URL+"/t", nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := p.srv.Client().Do(req); err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Error("reading a truncated body succeeded, want an error")
		}
	}
	if _, n := p.cache.Stats(); n != 0 {
		t.Errorf("entries = %d after a truncated response, want 0", n)
	}
}

func TestMiddlewareCountsHitsAndMisses(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10")
		fmt.Fprint(w, "x")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/m")             // miss
	p.get(t, "/m")             // hit
	clock.Advance(time.Minute) // stale
	p.get(t, "/m")             // miss
	for name, want := range map[string]float64{
		"tidegate_l7_cache_hits_total":   1,
		"tidegate_l7_cache_misses_total": 2,
		"tidegate_l7_cache_stored_total": 2,
	} {
		if got := p.counter(t, name, map[string]string{"route": "test"}); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

func TestMiddlewarePassesTrailers(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		w.Header().Set("Cache-Control", "max-age=60")
		w.WriteHeader(200)
		fmt.Fprint(w, "data")
		w.Header().Set("X-Checksum", "abc")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	resp, err := p.srv.Client().Get(p.srv.URL + "/trailer")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Trailer.Get("X-Checksum"); got != "abc" {
		t.Errorf("trailer X-Checksum = %q, want abc", got)
	}
	if cs := resp.Header.Get("Cache-Status"); !strings.Contains(cs, "detail=trailers") {
		t.Errorf("Cache-Status = %q, want detail=trailers", cs)
	}
}

func TestMiddlewareOverHTTP2(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "over h2")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	front := httptest.NewUnstartedServer(p.srv.Config.Handler)
	front.EnableHTTP2 = true
	front.StartTLS()
	t.Cleanup(front.Close)

	for i, want := range []string{"fwd=uri-miss", "hit"} {
		resp, err := front.Client().Get(front.URL + "/h2")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.ProtoMajor != 2 {
			t.Fatalf("request %d used HTTP/%d, want HTTP/2", i, resp.ProtoMajor)
		}
		if string(body) != "over h2" {
			t.Errorf("request %d body = %q", i, body)
		}
		if cs := resp.Header.Get("Cache-Status"); !strings.Contains(cs, want) {
			t.Errorf("request %d Cache-Status = %q, want %q", i, cs, want)
		}
	}
	wantRequests(t, o, 1)
}

func TestMiddleware304WithOtherETagRefetches(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("ETag", `W/"a"`)
		fmt.Fprint(w, "old")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/etag")
	clock.Advance(20 * time.Second)

	o.set(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10")
		if r.Header.Get("If-None-Match") != "" {
			// A 304 for a different representation than the stored one.
			w.Header().Set("ETag", `"b"`)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", `W/"b"`)
		fmt.Fprint(w, "new")
	})
	r := p.get(t, "/etag")
	if r.body != "new" {
		t.Errorf("body = %q, want new fetched after the mismatched 304", r.body)
	}
	wantRequests(t, o, 3)

	// A strong ETag in the 304 that only differs from the stored weak one
	// in weakness still updates the entry.
	clock.Advance(20 * time.Second)
	o.set(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("ETag", `"b"`)
		w.WriteHeader(http.StatusNotModified)
	})
	r = p.get(t, "/etag")
	if r.body != "new" {
		t.Errorf("body = %q, want the stored new", r.body)
	}
	wantCacheStatus(t, r, "fwd-status=304")
	wantRequests(t, o, 4)
}

func TestMiddlewareHeadFreshensStoredGet(t *testing.T) {
	clock := newTestClock()
	var etag atomic.Value
	etag.Store(`"one"`)
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("ETag", etag.Load().(string))
		w.Header().Set("X-Seen", r.Method)
		w.Header().Set("Content-Length", "4")
		if r.Method == http.MethodGet {
			fmt.Fprint(w, "body")
		}
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/hf")

	// A HEAD with the same ETag freshens the stored GET response.
	clock.Advance(20 * time.Second)
	wantStatus(t, p.do(t, http.MethodHead, "/hf"), 200)
	r := p.get(t, "/hf")
	wantCacheStatus(t, r, "hit")
	if got := r.header.Get("X-Seen"); got != "HEAD" {
		t.Errorf("X-Seen = %q, want HEAD from the freshening response (RFC 9111 section 4.3.5)", got)
	}
	if r.body != "body" {
		t.Errorf("body = %q, want the stored body", r.body)
	}
	wantRequests(t, o, 2)

	// A HEAD with another ETag shows the stored GET response is outdated.
	clock.Advance(20 * time.Second)
	etag.Store(`"two"`)
	p.do(t, http.MethodHead, "/hf")
	r = p.get(t, "/hf")
	wantCacheStatus(t, r, "fwd=uri-miss")
	if got := r.header.Get("ETag"); got != `"two"` {
		t.Errorf("ETag after the change = %q, want \"two\"", got)
	}
	wantRequests(t, o, 4)
}

func TestMiddleware304UpdatesVariantsWithSameETag(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("Vary", "Accept-Language")
		w.Header().Set("ETag", `"same"`)
		fmt.Fprint(w, "body")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/mv", "Accept-Language: en")
	p.get(t, "/mv", "Accept-Language: fr")
	clock.Advance(20 * time.Second)

	o.set(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=100")
		w.Header().Set("ETag", `"same"`)
		w.WriteHeader(http.StatusNotModified)
	})
	wantCacheStatus(t, p.get(t, "/mv", "Accept-Language: en"), "fwd-status=304")
	fr := p.get(t, "/mv", "Accept-Language: fr")
	wantCacheStatus(t, fr, "hit", "ttl=100")
	wantRequests(t, o, 3)
}

func TestInvalidatorOnUncachedRoute(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Cache-Control", "max-age=600")
		fmt.Fprint(w, "v")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/shared", "Host: site.example")

	// A second route without caching, sharing the cache's store.
	upstream := p.srv.Config.Handler.(*handler).next
	uncached := httptest.NewServer(p.cache.Invalidator(upstream))
	t.Cleanup(uncached.Close)

	get, err := http.NewRequest(http.MethodGet, uncached.URL+"/shared", nil)
	if err != nil {
		t.Fatal(err)
	}
	get.Host = "site.example"
	resp, err := uncached.Client().Do(get)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cs := resp.Header.Get("Cache-Status"); cs != "" {
		t.Errorf("uncached route added Cache-Status %q", cs)
	}
	wantCacheStatus(t, p.get(t, "/shared", "Host: site.example"), "hit")

	put, err := http.NewRequest(http.MethodPut, uncached.URL+"/shared", strings.NewReader("new"))
	if err != nil {
		t.Fatal(err)
	}
	put.Host = "site.example"
	resp, err = uncached.Client().Do(put)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	wantCacheStatus(t, p.get(t, "/shared", "Host: site.example"), "fwd=uri-miss")
}
