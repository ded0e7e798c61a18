package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidegate/tidegate/l7"
	"github.com/tidegate/tidegate/l7/conninfo"
	"github.com/tidegate/tidegate/shared/config"
)

func TestCheckL7Example(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"check", "../../deploy/l7.example.yaml"}, &stdout, &stderr); code != 0 {
		t.Fatalf("check deploy/l7.example.yaml exit code = %d; output:\n%s%s", code, stdout.String(), stderr.String())
	}
}

// TestRequestPoliciesExample builds the policy chains of every route in the
// example configuration, so an example that validates but fails to build
// (a bad regex or template) is caught.
func TestRequestPoliciesExample(t *testing.T) {
	f, err := config.Load("../../deploy/l7.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(l7PolicyBeforeCache(slog.New(slog.DiscardHandler), nil), l7PolicyAfterCache(slog.New(slog.DiscardHandler), nil)...)
	if len(opts) != 6 {
		t.Fatalf("got %d options, want 6", len(opts))
	}
	rp := &requestPolicies{logger: slog.New(slog.DiscardHandler)}
	for i := range f.L7.Routes {
		rt := &f.L7.Routes[i]
		h, err := rp.middleware(f.L7, rt, http.NotFoundHandler())
		if err != nil {
			t.Errorf("route %s: %v", rt.Name, err)
			continue
		}
		if c, ok := h.(io.Closer); ok {
			if err := c.Close(); err != nil {
				t.Errorf("route %s: close: %v", rt.Name, err)
			}
		}
	}
}

// servedBy records which handler served a request.
func servedBy(name string, got *string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { *got = name })
}

func requestOn(listener string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	if listener == "" {
		return r
	}
	info := &conninfo.Info{Listener: listener, Client: netip.MustParseAddrPort("192.0.2.1:1000")}
	return r.WithContext(conninfo.NewContext(r.Context(), info))
}

func TestPerListenerDispatch(t *testing.T) {
	a := &config.CompressPolicy{}
	b := &config.CompressPolicy{}
	cfg := &config.L7{Listeners: []config.Listener{
		{Name: "one", Policy: &config.Policy{Compress: a}},
		{Name: "two", Policy: &config.Policy{Compress: a}},
		{Name: "three", Policy: &config.Policy{Compress: b}},
		{Name: "none"},
	}}
	rt := &config.Route{Name: "r"}

	var got string
	builds := 0
	key := func(p config.Policy) any { return p.Compress }
	build := func(p config.Policy, next http.Handler) (http.Handler, []io.Closer, error) {
		builds++
		switch p.Compress {
		case a:
			return servedBy("a", &got), nil, nil
		case b:
			return servedBy("b", &got), nil, nil
		}
		return nil, nil, nil
	}
	h, err := perListener(cfg, rt, servedBy("next", &got), key, build)
	if err != nil {
		t.Fatal(err)
	}
	// Listeners one and two share section a, so it is built once; b and
	// "no section" make three builds in all.
	if builds != 3 {
		t.Errorf("build called %d times, want 3", builds)
	}
	for listener, want := range map[string]string{"one": "a", "two": "a", "three": "b", "none": "next", "": "next", "unknown": "next"} {
		got = ""
		h.ServeHTTP(httptest.NewRecorder(), requestOn(listener))
		if got != want {
			t.Errorf("request on listener %q served by %q, want %q", listener, got, want)
		}
	}

	// A route section replaces every listener's.
	c := &config.CompressPolicy{}
	rt.Policy = &config.Policy{Compress: c}
	build2 := func(p config.Policy, next http.Handler) (http.Handler, []io.Closer, error) {
		if p.Compress != c {
			t.Errorf("merged compress section %p, want the route's %p", p.Compress, c)
		}
		return servedBy("c", &got), nil, nil
	}
	if _, err := perListener(cfg, rt, servedBy("next", &got), key, build2); err != nil {
		t.Fatal(err)
	}
}

func TestPerListenerNoPolicy(t *testing.T) {
	cfg := &config.L7{Listeners: []config.Listener{{Name: "one"}}}
	next := http.NotFoundHandler()
	build := func(p config.Policy, next http.Handler) (http.Handler, []io.Closer, error) { return nil, nil, nil }
	h, err := perListener(cfg, &config.Route{Name: "r"}, next, func(p config.Policy) any { return p.Compress }, build)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := h.(*listenerDispatch); ok {
		t.Error("route without any policy got a dispatcher, want next unchanged")
	}
}

// TestRateLimitersClosed checks that closing a route's handler closes its
// rate limiters, which stop their sweepers.
func TestRateLimitersClosed(t *testing.T) {
	rl := &config.RateLimitPolicy{Requests: 1, Per: config.Duration(1e9), Burst: 1, Key: "client", MaxKeys: 10}
	cfg := &config.L7{Listeners: []config.Listener{
		{Name: "one", Policy: &config.Policy{RateLimit: rl}},
		{Name: "two", Policy: &config.Policy{RateLimit: rl}},
	}}
	rp := &requestPolicies{logger: slog.New(slog.DiscardHandler)}
	h, err := rp.middleware(cfg, &config.Route{Name: "r"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	if err != nil {
		t.Fatal(err)
	}
	d, ok := h.(*listenerDispatch)
	if !ok {
		t.Fatalf("handler is %T, want *listenerDispatch", h)
	}

	// Both listeners share one section, so they share one limiter.
	if len(d.closers) != 1 {
		t.Fatalf("%d rate limiters, want 1 shared by both listeners", len(d.closers))
	}

	codes := []int{}
	for _, listener := range []string{"one", "two"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, requestOn(listener))
		codes = append(codes, rec.Code)
	}
	if codes[0] != http.StatusOK || codes[1] != http.StatusTooManyRequests {
		t.Errorf("statuses %v on listeners one and two, want [200 429] from one shared bucket", codes)
	}
	if err := d.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
}

// BenchmarkRequestPolicies measures one request through a route's access,
// rate-limit and rewrite chain behind the per-listener dispatch, with a
// handler that writes nothing as the upstream.
func BenchmarkRequestPolicies(b *testing.B) {
	pol := &config.Policy{
		Access:    &config.AccessPolicy{Allow: []string{"192.0.2.0/24"}, Methods: []string{"GET"}},
		RateLimit: &config.RateLimitPolicy{Requests: 1 << 30, Per: config.Duration(1e9), Burst: 1 << 30, Key: "client", MaxKeys: 10},
		Rewrite: &config.RewritePolicy{
			Path:           &config.PathRewrite{StripPrefix: "/api"},
			RequestHeaders: &config.HeaderRules{Set: map[string]string{"X-Client": "${client_ip}"}},
		},
	}
	cfg := &config.L7{Listeners: []config.Listener{{Name: "one", Policy: pol}, {Name: "two"}}}
	rp := &requestPolicies{logger: slog.New(slog.DiscardHandler)}
	h, err := rp.middleware(cfg, &config.Route{Name: "r"}, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	if err != nil {
		b.Fatal(err)
	}
	defer h.(io.Closer).Close()
	info := &conninfo.Info{Listener: "one", Client: netip.MustParseAddrPort("192.0.2.1:1000")}
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodGet, "/api/items?x=1", nil)
		r = r.WithContext(conninfo.NewContext(r.Context(), info))
		h.ServeHTTP(w, r)
	}
}

// BenchmarkRequestNoPolicies is the baseline for BenchmarkRequestPolicies:
// the same request built and served by the bare handler.
func BenchmarkRequestNoPolicies(b *testing.B) {
	h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	info := &conninfo.Info{Listener: "one", Client: netip.MustParseAddrPort("192.0.2.1:1000")}
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodGet, "/api/items?x=1", nil)
		r = r.WithContext(conninfo.NewContext(r.Context(), info))
		h.ServeHTTP(w, r)
	}
}

// TestL7OptionsPolicyOrder serves one caching route through a real
// listener on 127.0.0.1 to show the order of l7Options. A cache hit carries
// the stored gzip variant, so compression runs inside the cache, and the
// rate limit still rejects a request the cache could serve, so it runs
// outside the cache.
func TestL7OptionsPolicyOrder(t *testing.T) {
	var upstreamHits atomic.Int32
	page := strings.Repeat("cached page ", 400)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstreamHits.Add(1)
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Cache-Control", "max-age=60")
		// NOTE: without Content-Length the compressor judges the minimum
		// size by the first write before a flush, and the reverse proxy
		// flushes every write of a body of unknown length.
		w.Header().Set("Content-Length", fmt.Sprint(len(page)))
		_, _ = io.WriteString(w, page)
	}))
	defer backend.Close()
	f, err := config.Parse([]byte(fmt.Sprintf(`
l7:
  listeners:
    - {name: web, address: "127.0.0.1:0"}
  routes:
    - name: pages
      upstream: app
      cache: {enabled: true}
      policy:
        rate_limit: {requests: 1, per: 1m, burst: 2}
        compress: {encodings: [gzip]}
  upstreams:
    - {name: app, backends: [{address: %q}]}
  access_log: {path: "off"}
`, strings.TrimPrefix(backend.URL, "http://"))))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := newL7(f, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := svc.(*l7.Server)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Drain(ctx)
	}()
	url := "http://" + srv.Addrs()["web"].String() + "/page"
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()

	get := func() *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}

	first := get()
	if first.StatusCode != http.StatusOK || first.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("first GET: status %d, Content-Encoding %q; want 200 and gzip", first.StatusCode, first.Header.Get("Content-Encoding"))
	}
	second := get()
	if second.StatusCode != http.StatusOK {
		t.Fatalf("second GET: status %d, want 200", second.StatusCode)
	}
	if cs := second.Header.Get("Cache-Status"); !strings.Contains(cs, "hit") {
		t.Errorf("second GET Cache-Status %q, want a hit", cs)
	}
	if ce := second.Header.Get("Content-Encoding"); ce != "gzip" {
		t.Errorf("cache hit Content-Encoding %q, want the stored gzip variant", ce)
	}
	if n := upstreamHits.Load(); n != 1 {
		t.Errorf("upstream served %d requests, want 1", n)
	}
	if third := get(); third.StatusCode != http.StatusTooManyRequests {
		t.Errorf("third GET within the burst of 2: status %d, want 429 before the cache", third.StatusCode)
	}
}
