package cache

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// testClock is a clock the test moves by hand.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock {
	return &testClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// origin is an httptest backend on 127.0.0.1 that counts requests and runs
// whichever handler the test sets. It sets Date from the test clock.
type origin struct {
	srv      *httptest.Server
	requests atomic.Int64
	mu       sync.Mutex
	handle   http.HandlerFunc
	last     http.Header // request header of the latest request
}

func newOrigin(t *testing.T, clock *testClock, h http.HandlerFunc) *origin {
	t.Helper()
	o := &origin{handle: h}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.requests.Add(1)
		o.mu.Lock()
		handle := o.handle
		o.last = r.Header.Clone()
		o.mu.Unlock()
		w.Header().Set("Date", clock.Now().Format(http.TimeFormat))
		handle(w, r)
	}))
	t.Cleanup(o.srv.Close)
	return o
}

func (o *origin) set(h http.HandlerFunc) {
	o.mu.Lock()
	o.handle = h
	o.mu.Unlock()
}

func (o *origin) lastHeader() http.Header {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.last
}

// testProxy is the middleware in front of a ReverseProxy to an origin,
// served on 127.0.0.1.
type testProxy struct {
	cache *Cache
	reg   *prometheus.Registry
	srv   *httptest.Server
	clock *testClock
	// mw is the cache middleware that srv serves.
	mw http.Handler

	// handlers counts middleware calls that have not returned. A client
	// has the whole body before the middleware returns, and the middleware
	// stores the response and counts it only after that.
	mu       sync.Mutex
	idle     *sync.Cond
	handlers int
}

func defaultPolicy() RoutePolicy {
	return RoutePolicy{
		Route:           "test",
		Enabled:         true,
		MaxEntrySize:    1 << 20,
		Strict:          true,
		Heuristic:       true,
		CDNCacheControl: true,
		CoalesceTimeout: 10 * time.Second,
	}
}

func newTestProxy(t *testing.T, clock *testClock, o *origin, p RoutePolicy) *testProxy {
	t.Helper()
	return newTestProxyWithBudget(t, clock, o, p, 16<<20)
}

func newTestProxyWithBudget(t *testing.T, clock *testClock, o *origin, p RoutePolicy, maxBytes int64) *testProxy {
	t.Helper()
	reg := prometheus.NewRegistry()
	c, err := New(Config{MaxBytes: maxBytes, Now: clock.Now}, nil, reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	target, err := url.Parse(o.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	tp := &testProxy{cache: c, reg: reg, clock: clock}
	tp.idle = sync.NewCond(&tp.mu)
	tp.mw = c.Middleware(p, rp)
	tp.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tp.mu.Lock()
		tp.handlers++
		tp.mu.Unlock()
		defer func() {
			tp.mu.Lock()
			tp.handlers--
			tp.idle.Broadcast()
			tp.mu.Unlock()
		}()
		tp.mw.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		tp.srv.Close()
		c.Wait()
	})
	return tp
}

// waitHandlers waits until every middleware call has returned, so that the
// counters and the store include the requests whose responses the test has
// read.
func (p *testProxy) waitHandlers() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.handlers > 0 {
		p.idle.Wait()
	}
}

// result is a response with its body read.
type result struct {
	status int
	header http.Header
	body   string
}

// do sends method to path on the proxy with header fields given as
// "Name: value" strings.
func (p *testProxy) do(t *testing.T, method, path string, fields ...string) result {
	t.Helper()
	req, err := http.NewRequest(method, p.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fields {
		name, value, ok := strings.Cut(f, ":")
		if !ok {
			t.Fatalf("header field %q has no colon", f)
		}
		value = strings.TrimSpace(value)
		if strings.EqualFold(name, "Host") {
			req.Host = value
			continue
		}
		req.Header.Add(name, value)
	}
	resp, err := p.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body of %s %s: %v", method, path, err)
	}
	return result{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

func (p *testProxy) get(t *testing.T, path string, fields ...string) result {
	t.Helper()
	return p.do(t, http.MethodGet, path, fields...)
}

// counter returns the value of a counter series with the given labels.
func (p *testProxy) counter(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := p.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metricLoop:
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue metricLoop
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

func wantStatus(t *testing.T, r result, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d (body %q, Cache-Status %q)", r.status, status, r.body, r.header.Get("Cache-Status"))
	}
}

func wantCacheStatus(t *testing.T, r result, contains ...string) {
	t.Helper()
	cs := r.header.Get("Cache-Status")
	for _, want := range contains {
		if !strings.Contains(cs, want) {
			t.Errorf("Cache-Status = %q, want it to contain %q", cs, want)
		}
	}
}

func wantRequests(t *testing.T, o *origin, n int64) {
	t.Helper()
	if got := o.requests.Load(); got != n {
		t.Fatalf("origin saw %d requests, want %d", got, n)
	}
}
