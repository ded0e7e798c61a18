package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidegate/tidegate/l7/conninfo"
	"github.com/tidegate/tidegate/shared/config"
)

func testPool(t testing.TB, cfg config.Upstream, opts ...Option) *Pool {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	if cfg.Balance == "" {
		cfg.Balance = "round_robin"
	}
	if cfg.Protocol == "" {
		cfg.Protocol = "http1"
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = config.Duration(time.Second)
	}
	if cfg.Outlier.ConsecutiveFailures == 0 {
		cfg.Outlier.ConsecutiveFailures = 1000
	}
	if cfg.RetryBudget.MinConcurrency == 0 {
		cfg.RetryBudget = config.RetryBudget{Percent: 20, MinConcurrency: 3}
	}
	p, err := New(cfg, slog.New(slog.DiscardHandler), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func weights(ws ...int) []config.Backend {
	out := make([]config.Backend, len(ws))
	for i, w := range ws {
		out[i] = config.Backend{Address: fmt.Sprintf("10.0.0.%d:80", i+1), Weight: &w}
	}
	return out
}

func noSkip(*Backend) bool { return false }

func TestRoundRobinWeights(t *testing.T) {
	p := testPool(t, config.Upstream{Backends: weights(3, 1, 0)})
	counts := map[string]int{}
	var order []string
	for range 8 {
		b := p.balancer.pick(nil, p.backends, noSkip)
		counts[b.Addr]++
		order = append(order, b.Addr)
	}
	if counts["10.0.0.1:80"] != 6 || counts["10.0.0.2:80"] != 2 || counts["10.0.0.3:80"] != 0 {
		t.Errorf("8 picks over weights 3,1,0 = %v, want 6, 2, 0", counts)
	}
	// Smooth weighted round robin spreads the light backend out instead
	// of sending it two picks in a row.
	for i := 1; i < len(order); i++ {
		if order[i] == "10.0.0.2:80" && order[i-1] == "10.0.0.2:80" {
			t.Errorf("pick order %v sends the weight-1 backend twice in a row", order)
		}
	}
}

func TestRoundRobinSkips(t *testing.T) {
	p := testPool(t, config.Upstream{Backends: weights(1, 1, 1)})
	down := p.backends[1]
	for range 6 {
		b := p.balancer.pick(nil, p.backends, func(b *Backend) bool { return b == down })
		if b == down {
			t.Fatalf("pick returned skipped backend %s", b.Addr)
		}
	}
	if b := p.balancer.pick(nil, p.backends, func(*Backend) bool { return true }); b != nil {
		t.Errorf("pick with every backend skipped = %s, want nil", b.Addr)
	}
}

func TestLeastRequestPrefersIdle(t *testing.T) {
	p := testPool(t, config.Upstream{Balance: "least_request", Backends: weights(1, 1)})
	busy, idle := p.backends[0], p.backends[1]
	busy.inFlight.Store(10)
	for range 20 {
		// With two backends both candidates are always drawn, so the idle
		// one must win every time.
		if b := p.balancer.pick(nil, p.backends, noSkip); b != idle {
			t.Fatalf("least request picked %s with 10 in flight over an idle backend", b.Addr)
		}
	}
}

func TestConsistentHashStable(t *testing.T) {
	p := testPool(t, config.Upstream{Balance: "hash", HashKey: "header:X-User", Backends: weights(1, 1, 1, 1)})
	req := func(user string) *http.Request {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("X-User", user)
		return r
	}
	first := map[string]*Backend{}
	for i := range 100 {
		u := fmt.Sprintf("user-%d", i)
		first[u] = p.balancer.pick(req(u), p.backends, noSkip)
	}
	for u, b := range first {
		if got := p.balancer.pick(req(u), p.backends, noSkip); got != b {
			t.Fatalf("key %s moved from %s to %s with no change", u, b.Addr, got.Addr)
		}
	}
	// Taking one backend out moves only its keys.
	removed := p.backends[2]
	skip := func(b *Backend) bool { return b == removed }
	for u, b := range first {
		got := p.balancer.pick(req(u), p.backends, skip)
		if b != removed && got != b {
			t.Errorf("key %s on live backend %s moved to %s when another backend left", u, b.Addr, got.Addr)
		}
		if got == removed {
			t.Errorf("key %s still on the removed backend", u)
		}
	}
}

func TestConsistentHashClientAddr(t *testing.T) {
	p := testPool(t, config.Upstream{Balance: "hash", HashKey: "client", Backends: weights(1, 1, 1)})
	req := func(client string) *http.Request {
		r := httptest.NewRequest("GET", "/", nil)
		info := &conninfo.Info{Client: netip.MustParseAddrPort(client)}
		return r.WithContext(conninfo.NewContext(r.Context(), info))
	}
	a := p.balancer.pick(req("192.0.2.1:1000"), p.backends, noSkip)
	for port := range 20 {
		if b := p.balancer.pick(req(fmt.Sprintf("192.0.2.1:%d", 2000+port)), p.backends, noSkip); b != a {
			t.Fatalf("same client address on another port went to %s, want %s", b.Addr, a.Addr)
		}
	}
}

func TestRetryable(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	connRefused := &connectError{err: errors.New("connect: connection refused")}
	timeout := &net.OpError{Op: "read", Err: timeoutErr{}}
	tests := []struct {
		name   string
		method string
		body   io.Reader
		header string
		ctx    context.Context
		err    error
		want   bool
	}{
		{"get after connect failure", "GET", nil, "", nil, connRefused, true},
		{"head after reset", "HEAD", nil, "", nil, errors.New("connection reset by peer"), true},
		{"put without body", "PUT", nil, "", nil, connRefused, true},
		{"post", "POST", nil, "", nil, connRefused, false},
		{"post with idempotency key", "POST", nil, "Idempotency-Key", nil, connRefused, true},
		{"patch", "PATCH", nil, "", nil, connRefused, false},
		{"put with unreplayable body", "PUT", io.NopCloser(strings.NewReader("x")), "", nil, connRefused, false},
		{"get after timeout", "GET", nil, "", nil, timeout, false},
		{"client gone", "GET", nil, "", canceled, connRefused, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "/", nil)
			if tc.body != nil {
				r.Body = io.NopCloser(tc.body)
				r.GetBody = nil
			}
			if tc.header != "" {
				r.Header.Set(tc.header, "k1")
			}
			if tc.ctx != nil {
				r = r.WithContext(tc.ctx)
			}
			if got := Retryable(r, tc.err); got != tc.want {
				t.Errorf("Retryable(%s, %v) = %v, want %v", tc.method, tc.err, got, tc.want)
			}
		})
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// deadAddr returns a 127.0.0.1 address with nothing listening.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func liveBackend(t *testing.T, name string) (string, *int64) {
	t.Helper()
	var n int64
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		mu.Unlock()
		_, _ = io.WriteString(w, name)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), &n
}

func TestRoundTripFailsOverOnConnectError(t *testing.T) {
	live, _ := liveBackend(t, "live")
	dead := deadAddr(t)
	p := testPool(t, config.Upstream{
		Retries:  1,
		Backends: []config.Backend{{Address: dead}, {Address: live}},
	})
	for i := range 4 {
		att := &Attempt{}
		r := httptest.NewRequest("GET", "http://x/", nil).WithContext(WithAttempt(context.Background(), att))
		r.RequestURI = ""
		resp, err := p.RoundTrip(r)
		if err != nil {
			t.Fatalf("GET #%d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "live" {
			t.Errorf("GET #%d body %q, want live", i, body)
		}
		if att.Backend != live {
			t.Errorf("attempt backend = %s, want %s", att.Backend, live)
		}
	}
}

func TestRoundTripDoesNotRetryPost(t *testing.T) {
	dead := deadAddr(t)
	live, hits := liveBackend(t, "live")
	p := testPool(t, config.Upstream{Retries: 3, Backends: []config.Backend{{Address: dead}, {Address: live}}})
	var failures int
	for range 4 {
		r := httptest.NewRequest("POST", "http://x/", strings.NewReader("body"))
		r.RequestURI = ""
		resp, err := p.RoundTrip(r)
		if err != nil {
			if !IsConnectError(err) {
				t.Errorf("POST error %v, want a connect error", err)
			}
			failures++
			continue
		}
		resp.Body.Close()
	}
	if failures != 2 || *hits != 2 {
		t.Errorf("4 POSTs over one dead and one live backend: %d failed, %d reached live; want 2 and 2", failures, *hits)
	}
}

func TestRoundTripNoBackend(t *testing.T) {
	p := testPool(t, config.Upstream{Backends: weights(1)})
	p.backends[0].up.Store(false)
	r := httptest.NewRequest("GET", "http://x/", nil)
	if _, err := p.RoundTrip(r); !errors.Is(err, ErrNoBackend) {
		t.Errorf("RoundTrip with every backend down = %v, want ErrNoBackend", err)
	}
}

func TestRoundTripMaxRequests(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	stub := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		entered <- struct{}{}
		<-release
		return &http.Response{StatusCode: 200, Body: http.NoBody, Request: r}, nil
	})
	p := testPool(t, config.Upstream{MaxRequests: 1, Backends: weights(1)}, WithTransport(stub))

	done := make(chan error, 1)
	go func() {
		resp, err := p.RoundTrip(httptest.NewRequest("GET", "http://x/", nil))
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	<-entered

	if _, err := p.RoundTrip(httptest.NewRequest("GET", "http://x/", nil)); !errors.Is(err, ErrOverloaded) {
		t.Errorf("second concurrent request = %v, want ErrOverloaded", err)
	}

	close(release)
	if err := <-done; err != nil {
		t.Errorf("first request: %v", err)
	}
	// The slot is free again once the first response body is closed.
	go func() { <-entered }()
	resp, err := p.RoundTrip(httptest.NewRequest("GET", "http://x/", nil))
	if err != nil {
		t.Fatalf("request after the first finished: %v", err)
	}
	resp.Body.Close()
}

func TestPassiveEjection(t *testing.T) {
	var calls int
	stub := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		calls++
		return &http.Response{StatusCode: 503, Body: http.NoBody, Request: r}, nil
	})
	p := testPool(t, config.Upstream{
		Backends: weights(1),
		Outlier:  config.Outlier{ConsecutiveFailures: 3, Cooldown: config.Duration(time.Minute)},
	}, WithTransport(stub))
	now := time.Unix(1000, 0)
	p.now = func() time.Time { return now }

	for i := range 3 {
		resp, err := p.RoundTrip(httptest.NewRequest("GET", "http://x/", nil))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp.Body.Close()
	}
	if _, err := p.RoundTrip(httptest.NewRequest("GET", "http://x/", nil)); !errors.Is(err, ErrNoBackend) {
		t.Errorf("request after 3 consecutive 503s = %v, want ErrNoBackend (ejected)", err)
	}
	if st := p.Stats()[0]; !st.Ejected || st.Ejections != 1 {
		t.Errorf("stats after ejection = %+v, want ejected once", st)
	}

	now = now.Add(time.Minute)
	resp, err := p.RoundTrip(httptest.NewRequest("GET", "http://x/", nil))
	if err != nil {
		t.Fatalf("request after the cool-down: %v", err)
	}
	resp.Body.Close()
	if calls != 4 {
		t.Errorf("backend got %d requests, want 4", calls)
	}
}

func TestRetryBudget(t *testing.T) {
	p := testPool(t, config.Upstream{Backends: weights(1), RetryBudget: config.RetryBudget{Percent: 50, MinConcurrency: 1}})
	p.inFlight.Store(4)
	if !p.takeRetry() || !p.takeRetry() {
		t.Fatal("two retries with 4 requests in flight and a 50% budget were connRefused")
	}
	if p.takeRetry() {
		t.Error("third retry allowed, want the 50% budget of 4 requests to stop it")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestInheritKeepsState(t *testing.T) {
	hc := &config.HealthCheck{Type: "tcp", Interval: config.Duration(time.Hour), Timeout: config.Duration(time.Second), Rise: 1, Fall: 1}
	old := testPool(t, config.Upstream{Backends: weights(1, 1), HealthCheck: hc})
	old.backends[0].up.Store(false)
	old.backends[1].ejectedUntil.Store(time.Now().Add(time.Hour).UnixNano())

	// The new pool keeps 10.0.0.1 and 10.0.0.2 and adds 10.0.0.3.
	next := testPool(t, config.Upstream{Backends: weights(1, 1, 1), HealthCheck: hc})
	next.Inherit(old)
	st := next.Stats()
	if st[0].Healthy {
		t.Error("backend down in the old pool is up after Inherit")
	}
	if !st[1].Ejected {
		t.Error("backend ejected in the old pool is not ejected after Inherit")
	}
	if !st[2].Healthy || st[2].Ejected {
		t.Errorf("new backend state = %+v, want healthy and not ejected", st[2])
	}
}

func TestResponseHeaderTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer srv.Close()
	defer close(release)
	p := testPool(t, config.Upstream{
		ResponseHeaderTimeout: config.Duration(50 * time.Millisecond),
		Backends:              []config.Backend{{Address: strings.TrimPrefix(srv.URL, "http://")}},
	})
	_, err := p.RoundTrip(httptest.NewRequest("GET", "http://x/", nil))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("RoundTrip to a backend that never answers = %v, want a timeout error", err)
	}
}

func TestTLSBackend(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto)
	}))
	defer srv.Close()
	p := testPool(t, config.Upstream{
		TLS:                true,
		InsecureSkipVerify: true,
		Backends:           []config.Backend{{Address: strings.TrimPrefix(srv.URL, "https://")}},
	})
	resp, err := p.RoundTrip(httptest.NewRequest("GET", "http://x/", nil))
	if err != nil {
		t.Fatalf("RoundTrip to TLS backend: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "HTTP/1.1" && string(body) != "HTTP/2.0" {
		t.Errorf("TLS backend saw proto %q", body)
	}
	if resp.Request.URL.Scheme != "https" {
		t.Errorf("request scheme = %s, want https", resp.Request.URL.Scheme)
	}
}

func TestConsistentHashCookie(t *testing.T) {
	p := testPool(t, config.Upstream{Balance: "hash", HashKey: "cookie:session", Backends: weights(1, 1, 1)})
	req := func(cookie string) *http.Request {
		r := httptest.NewRequest("GET", "/", nil)
		if cookie != "" {
			r.AddCookie(&http.Cookie{Name: "session", Value: cookie})
		}
		return r
	}
	spread := map[*Backend]bool{}
	for i := range 30 {
		v := fmt.Sprintf("s%d", i)
		first := p.balancer.pick(req(v), p.backends, noSkip)
		spread[first] = true
		for range 3 {
			if got := p.balancer.pick(req(v), p.backends, noSkip); got != first {
				t.Fatalf("cookie %s moved from %s to %s", v, first.Addr, got.Addr)
			}
		}
	}
	if len(spread) != 3 {
		t.Errorf("30 sessions landed on %d backends, want all 3", len(spread))
	}
	// Without the cookie the pool falls back to round robin.
	seen := map[*Backend]bool{}
	for range 3 {
		seen[p.balancer.pick(req(""), p.backends, noSkip)] = true
	}
	if len(seen) != 3 {
		t.Errorf("3 requests without the cookie used %d backends, want 3 (round robin)", len(seen))
	}
}
