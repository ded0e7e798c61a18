package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
	"time"
)

// resultRecorder collects OnResult calls by the X-Test-Id request field.
type resultRecorder struct {
	mu      sync.Mutex
	results map[string][]string
}

func (rr *resultRecorder) record(r *http.Request, result string) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	id := r.Header.Get("X-Test-Id")
	rr.results[id] = append(rr.results[id], result)
}

func (rr *resultRecorder) get(id string) []string {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	return rr.results[id]
}

func TestOnResultPerResponse(t *testing.T) {
	clock := newTestClock()
	failing := false
	var mu sync.Mutex
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		fail := failing
		mu.Unlock()
		if fail {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("ETag", `"v1"`)
		switch r.URL.Path {
		case "/swr":
			w.Header().Set("Cache-Control", "max-age=10, stale-while-revalidate=60")
		case "/sie":
			w.Header().Set("Cache-Control", "max-age=10, stale-if-error=60")
		default:
			w.Header().Set("Cache-Control", "max-age=10")
		}
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		fmt.Fprint(w, "body")
	})

	rec := &resultRecorder{results: map[string][]string{}}
	c, err := New(Config{MaxBytes: 1 << 20, Now: clock.Now, OnResult: rec.record}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	target, err := url.Parse(o.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := &httputil.ReverseProxy{
		Rewrite:  func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		ErrorLog: log.New(io.Discard, "", 0),
	}
	srv := httptest.NewServer(c.Middleware(defaultPolicy(), rp))
	t.Cleanup(srv.Close)

	send := func(id, method, path string, fields ...string) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Test-Id", id)
		for i := 0; i+1 < len(fields); i += 2 {
			req.Header.Set(fields[i], fields[i+1])
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	send("miss", "GET", "/page")
	send("hit", "GET", "/page")
	send("no-store", "GET", "/page", "Cache-Control", "no-store")
	send("post", "POST", "/other")
	send("only-if-cached", "GET", "/absent", "Cache-Control", "only-if-cached")
	send("no-cache", "GET", "/page", "Cache-Control", "no-cache")

	send("swr-fill", "GET", "/swr")
	send("sie-fill", "GET", "/sie")
	send("revalidate-fill", "GET", "/revalidate")
	clock.Advance(20 * time.Second)
	send("swr", "GET", "/swr")
	send("revalidated", "GET", "/revalidate")
	// The background refresh of /swr also sends X-Test-Id "swr", so a
	// report from it would show up as a second result.
	c.Wait()

	mu.Lock()
	failing = true
	mu.Unlock()
	send("stale-if-error", "GET", "/sie")

	want := map[string]string{
		"miss":           ResultMiss,
		"hit":            ResultHit,
		"no-store":       ResultBypass,
		"post":           ResultBypass,
		"only-if-cached": ResultMiss,
		"no-cache":       ResultRevalidated,
		"swr":            ResultStale,
		"revalidated":    ResultRevalidated,
		"stale-if-error": ResultStale,
	}
	for id, result := range want {
		got := rec.get(id)
		if len(got) != 1 {
			t.Errorf("request %s: results %v, want exactly [%s]", id, got, result)
			continue
		}
		if got[0] != result {
			t.Errorf("request %s: result %q, want %q", id, got[0], result)
		}
	}
}

func TestOnResultInvalidatorSilent(t *testing.T) {
	rec := &resultRecorder{results: map[string][]string{}}
	c, err := New(Config{MaxBytes: 1 << 20, OnResult: rec.record}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := c.Invalidator(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	for _, method := range []string{"GET", "POST"} {
		req := httptest.NewRequest(method, "http://example.test/", nil)
		req.Header.Set("X-Test-Id", method)
		h.ServeHTTP(httptest.NewRecorder(), req)
		if got := rec.get(method); len(got) != 0 {
			t.Errorf("%s on a route without caching: results %v, want none", method, got)
		}
	}
}

func TestWaitContextBoundedByContext(t *testing.T) {
	clock := newTestClock()
	release := make(chan struct{})
	var calls sync.WaitGroup
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("If-None-Match") != "" || r.Header.Get("X-Refresh") != "" {
			calls.Done()
			<-release
		}
		w.Header().Set("Cache-Control", "max-age=10, stale-while-revalidate=60")
		fmt.Fprint(w, "body")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/page")
	clock.Advance(20 * time.Second)
	calls.Add(1)
	p.get(t, "/page", "X-Refresh: 1")
	calls.Wait()

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.cache.WaitContext(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitContext with a refresh running and a cancelled context = %v, want context.Canceled", err)
	}

	close(release)
	if err := p.cache.WaitContext(context.Background()); err != nil {
		t.Errorf("WaitContext after the refresh ended = %v, want nil", err)
	}
}
