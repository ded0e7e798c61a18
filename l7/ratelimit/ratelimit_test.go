package ratelimit

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tidegate/tidegate/shared/config"
)

func peerAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

func newLimiter(t testing.TB, cfg config.RateLimitPolicy, reg prometheus.Registerer) *Limiter {
	t.Helper()
	if cfg.Per == 0 {
		cfg.Per = config.Duration(time.Second)
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = config.DefaultRateLimitMaxKeys
	}
	l, err := New(&cfg, Options{Route: "api", ClientAddr: peerAddr, Registerer: reg})
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestCheckLocalBurst(t *testing.T) {
	l := newLimiter(t, config.RateLimitPolicy{Requests: 1, Per: config.Duration(time.Hour), Burst: 3, Key: "client"}, nil)
	now := time.Now()
	for i := range 3 {
		d := l.checkLocal(now, "a")
		if !d.Allowed {
			t.Fatalf("request %d: rejected within the burst", i)
		}
		if d.Remaining != 2-i {
			t.Errorf("request %d: Remaining = %d, want %d", i, d.Remaining, 2-i)
		}
	}
	d := l.checkLocal(now, "a")
	if d.Allowed {
		t.Fatalf("request 4: allowed beyond the burst")
	}
	if d.RetryAfter < 59*time.Minute || d.RetryAfter > time.Hour {
		t.Errorf("RetryAfter = %s, want about 1h", d.RetryAfter)
	}
	if d := l.checkLocal(now, "b"); !d.Allowed {
		t.Errorf("another key was rejected")
	}
	if d := l.checkLocal(now.Add(time.Hour), "a"); !d.Allowed {
		t.Errorf("key still rejected after one interval")
	}
}

func TestCheckLocalDelay(t *testing.T) {
	l := newLimiter(t, config.RateLimitPolicy{Requests: 10, Burst: 2, Delay: true, Key: "route"}, nil)
	now := time.Now()
	want := []struct {
		allowed bool
		delay   time.Duration
	}{{true, 0}, {true, 100 * time.Millisecond}, {true, 200 * time.Millisecond}, {false, 0}}
	for i, w := range want {
		d := l.checkLocal(now, "")
		if d.Allowed != w.allowed || d.Delay.Round(time.Millisecond) != w.delay {
			t.Errorf("request %d = allowed %v delay %s, want %v %s", i, d.Allowed, d.Delay, w.allowed, w.delay)
		}
	}
}

func TestSweepForgetsIdleKeys(t *testing.T) {
	reg := prometheus.NewRegistry()
	l := newLimiter(t, config.RateLimitPolicy{Requests: 10, Burst: 5}, reg)
	now := time.Now()
	for i := range 100 {
		l.checkLocal(now, fmt.Sprint("k", i))
	}
	l.sweep(now)
	if n := l.keys.Load(); n != 100 {
		t.Fatalf("keys after an early sweep = %d, want 100", n)
	}
	l.checkLocal(now.Add(2*time.Second), "k1")
	l.sweep(now.Add(2 * time.Second))
	if n := l.keys.Load(); n != 1 {
		t.Errorf("keys after sweeping idle ones = %d, want 1 (the key still in use)", n)
	}
	if v := testutil.ToFloat64(l.metrics.keys); v != 1 {
		t.Errorf("keys gauge = %v, want 1", v)
	}
}

func TestMaxKeysOverflow(t *testing.T) {
	l := newLimiter(t, config.RateLimitPolicy{Requests: 1, Per: config.Duration(time.Hour), Burst: 1, MaxKeys: 2}, nil)
	now := time.Now()
	l.checkLocal(now, "a")
	l.checkLocal(now, "b")
	if d := l.checkLocal(now, "c"); !d.Allowed {
		t.Errorf("first key beyond max_keys rejected, want the overflow bucket's token")
	}
	if d := l.checkLocal(now, "d"); d.Allowed {
		t.Errorf("second key beyond max_keys allowed, want it to share the empty overflow bucket")
	}
	if n := l.keys.Load(); n != 2 {
		t.Errorf("tracked keys = %d, want 2", n)
	}
}

func TestKeySources(t *testing.T) {
	tests := []struct {
		key    string
		header http.Header
		want   string
	}{
		{"client", http.Header{"X-Forwarded-For": {"1.2.3.4"}}, "c:127.0.0.9"},
		{"route", nil, ""},
		{"header:x-api-key", http.Header{"X-Api-Key": {"k1"}}, "h:k1"},
		{"header:x-api-key", nil, "c:127.0.0.9"},
		{"cookie:session", http.Header{"Cookie": {"session=s1; other=x"}}, "k:s1"},
		{"cookie:session", http.Header{"Cookie": {"other=x"}}, "c:127.0.0.9"},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			l := newLimiter(t, config.RateLimitPolicy{Requests: 1, Key: tc.key}, nil)
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = "[::ffff:127.0.0.9]:4000"
			for k, v := range tc.header {
				r.Header[k] = v
			}
			if got := l.Key(r); got != tc.want {
				t.Errorf("Key() = %q, want %q", got, tc.want)
			}
		})
	}
}

// clientFrom returns an HTTP client whose connections come from the
// loopback address src, so one test can act as several clients.
func clientFrom(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 10 * time.Second}
}

func TestMiddlewareTwoClients(t *testing.T) {
	reg := prometheus.NewRegistry()
	l := newLimiter(t, config.RateLimitPolicy{Requests: 10, Burst: 5, Key: "client"}, reg)
	srv := httptest.NewServer(l.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})))
	t.Cleanup(srv.Close)

	type result struct {
		status     int
		retryAfter string
		policy     string
		rateLimit  string
	}
	run := func(src string, n int, spoof bool) []result {
		c := clientFrom(src)
		var out []result
		for i := range n {
			req, _ := http.NewRequest("GET", srv.URL, nil)
			if spoof {
				req.Header.Set("X-Forwarded-For", fmt.Sprintf("10.0.%d.%d", i/250, i%250+1))
				req.Header.Set("X-Real-IP", fmt.Sprintf("10.1.0.%d", i+1))
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Errorf("%s request %d: %v", src, i, err)
				return out
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			out = append(out, result{resp.StatusCode, resp.Header.Get("Retry-After"), resp.Header.Get("RateLimit-Policy"), resp.Header.Get("RateLimit")})
		}
		return out
	}

	var wg sync.WaitGroup
	var first, second []result
	start := time.Now()
	wg.Go(func() { first = run("127.0.0.2", 40, true) })
	wg.Go(func() { second = run("127.0.0.3", 5, false) })
	wg.Wait()
	elapsed := time.Since(start)

	allowed, rejected := 0, 0
	for i, r := range first {
		if r.policy != `"api";q=10;w=1` {
			t.Errorf("response %d RateLimit-Policy = %q", i, r.policy)
		}
		if !strings.HasPrefix(r.rateLimit, `"api";r=`) {
			t.Errorf("response %d RateLimit = %q", i, r.rateLimit)
		}
		switch r.status {
		case 200:
			allowed++
		case 429:
			rejected++
			if n, err := strconv.Atoi(r.retryAfter); err != nil || n < 1 {
				t.Errorf("429 response %d Retry-After = %q, want whole seconds >= 1", i, r.retryAfter)
			}
			if !strings.HasPrefix(r.rateLimit, `"api";r=0;`) {
				t.Errorf("429 response %d RateLimit = %q, want r=0", i, r.rateLimit)
			}
		default:
			t.Errorf("response %d status = %d", i, r.status)
		}
	}
	// The bucket holds 5 and refills 10 per second, so the allowed count is
	// bounded by how long the 40 requests took.
	bound := 5 + int(elapsed.Seconds()*10) + 1
	if rejected == 0 || allowed > bound {
		t.Errorf("spoofing client: %d allowed, %d rejected in %s; want some 429s and at most %d allowed", allowed, rejected, elapsed, bound)
	}
	for i, r := range second {
		if r.status != 200 {
			t.Errorf("second client request %d: status %d, want 200", i, r.status)
		}
	}
	if v := testutil.ToFloat64(l.metrics.decisions.WithLabelValues(ResultRejected)); int(v) != rejected {
		t.Errorf("rejected metric = %v, want %d", v, rejected)
	}
}

func TestMiddlewareDelay(t *testing.T) {
	l := newLimiter(t, config.RateLimitPolicy{Requests: 20, Burst: 3, Delay: true, Key: "route"}, nil)
	srv := httptest.NewServer(l.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})))
	t.Cleanup(srv.Close)
	// Reserve the whole queue at once so the outcome does not depend on
	// how fast the requests are sent: 1 now, 3 delayed, the rest rejected.
	now := time.Now()
	for range 4 {
		if d := l.checkLocal(now, ""); !d.Allowed {
			t.Fatalf("reservation within the queue rejected")
		}
	}
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 {
		t.Errorf("request beyond the queue: status %d, want 429", resp.StatusCode)
	}

	// After the queue drains, a request waits for its slot and succeeds.
	l2 := newLimiter(t, config.RateLimitPolicy{Requests: 20, Burst: 3, Delay: true, Key: "route"}, nil)
	srv2 := httptest.NewServer(l2.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})))
	t.Cleanup(srv2.Close)
	var wg sync.WaitGroup
	statuses := make([]int, 4)
	for i := range statuses {
		wg.Go(func() {
			resp, err := http.Get(srv2.URL)
			if err != nil {
				t.Errorf("GET %d: %v", i, err)
				return
			}
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		})
	}
	wg.Wait()
	for i, s := range statuses {
		if s != 200 {
			t.Errorf("queued request %d: status %d, want 200 after a delay", i, s)
		}
	}
}

// startRedis runs a private redis-server on a unix socket and returns the
// socket path. It skips when redis-server is missing, except under CI=true.
func startRedis(t *testing.T) (string, *exec.Cmd) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true but redis-server is not installed")
		}
		t.Skip("redis-server not installed")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "redis.sock")
	cmd := exec.Command(bin, "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no", "--dir", dir)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			return sock, cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server did not open %s: %v", sock, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRedisSharedAndFallback(t *testing.T) {
	sock, redisCmd := startRedis(t)
	cfg := config.RateLimitPolicy{
		Requests: 1, Per: config.Duration(time.Hour), Burst: 4, Key: "header:x-api-key", MaxKeys: 100,
		Redis: &config.RedisLimit{Address: "unix:" + sock, Prefix: "test:", Timeout: config.Duration(time.Second)},
	}
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	// Two limiters stand for two L7 nodes sharing one Redis.
	nodes := make([]*Limiter, 2)
	for i := range nodes {
		l, err := New(&cfg, Options{Route: "api", ClientAddr: peerAddr, Logger: logger})
		if err != nil {
			t.Fatalf("New() error = %v", err)
		}
		t.Cleanup(func() { l.Close() })
		nodes[i] = l
	}
	ctx := context.Background()
	allowed := 0
	for i := range 10 {
		d := nodes[i%2].Check(ctx, "h:key1")
		if !d.Shared {
			t.Fatalf("check %d was not decided by Redis", i)
		}
		if d.Allowed {
			allowed++
		} else if d.RetryAfter <= 0 {
			t.Errorf("check %d rejected with RetryAfter %s", i, d.RetryAfter)
		}
	}
	if allowed != 4 {
		t.Errorf("allowed across both nodes = %d, want the shared burst of 4", allowed)
	}
	if d := nodes[0].Check(ctx, "h:key2"); !d.Allowed || d.Remaining != 3 {
		t.Errorf("fresh key = %+v, want allowed with 3 remaining", d)
	}

	_ = redisCmd.Process.Kill()
	_ = redisCmd.Wait()
	srv := httptest.NewServer(nodes[0].Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})))
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("X-Api-Key", "key3")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET with Redis down: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET with Redis down: status %d, want 200 from the local limiter", resp.StatusCode)
	}
	if !strings.Contains(logs.String(), "redis rate limit store unreachable") {
		t.Errorf("no log line about the Redis fallback; logs:\n%s", logs.String())
	}
	if d := nodes[0].Check(ctx, "h:key3"); d.Shared {
		t.Errorf("check right after a failure went to Redis, want local")
	}
}

func BenchmarkCheckLocalOneKey(b *testing.B) {
	l := newLimiter(b, config.RateLimitPolicy{Requests: 1_000_000_000, Burst: 1000}, nil)
	b.ReportAllocs()
	for b.Loop() {
		l.checkLocal(time.Now(), "c:127.0.0.1")
	}
}

func BenchmarkCheckLocalManyKeys(b *testing.B) {
	l := newLimiter(b, config.RateLimitPolicy{Requests: 100, Burst: 10}, nil)
	keys := make([]string, 10_000)
	for i := range keys {
		keys[i] = fmt.Sprintf("c:10.0.%d.%d", i/256, i%256)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		l.checkLocal(time.Now(), keys[i%len(keys)])
		i++
	}
}

func BenchmarkCheckLocalParallel(b *testing.B) {
	l := newLimiter(b, config.RateLimitPolicy{Requests: 100, Burst: 10}, nil)
	keys := make([]string, 10_000)
	for i := range keys {
		keys[i] = fmt.Sprintf("c:10.0.%d.%d", i/256, i%256)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.checkLocal(time.Now(), keys[i%len(keys)])
			i++
		}
	})
}
