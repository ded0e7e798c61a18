//go:build integration

package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tidegate/tidegate/shared/echo"
)

// TestL7FastPathReloadUnderLoad flips fast_path and the route's upstream
// with SIGHUP while keep-alive clients send requests without pause. Every
// request must succeed: a connection that the fast path serves moves to
// net/http at its next request after fast_path goes off, and back for new
// connections after it comes on.
func TestL7FastPathReloadUnderLoad(t *testing.T) {
	dir := t.TempDir()
	a, _ := startEcho(t, "a")
	b, _ := startEcho(t, "b")
	addr := freeAddr(t)
	body := func(target string, fast bool) string {
		return fmt.Sprintf(`listeners:
  - name: edge
    address: %s
    fast_path: %v
routes:
  - name: all
    upstream: %s
upstreams:
  - name: a
    backends:
      - address: %s
  - name: b
    backends:
      - address: %s
`, addr, fast, target, a, b)
	}
	l7 := startL7(t, dir, body("a", true))
	header, err := os.ReadFile(l7.config)
	if err != nil {
		t.Fatal(err)
	}
	prefix, _, _ := strings.Cut(string(header), "l7:\n")
	reloads := 0
	rewrite := func(l7Body string) {
		t.Helper()
		if err := os.WriteFile(l7.config, []byte(prefix+"l7:\n"+indent(l7Body, 2)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := l7.signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		reloads++
		eventually(t, 5*time.Second, "reload applied", func() bool {
			return strings.Count(l7.out.String(), `msg="config reloaded"`) >= reloads
		})
	}

	var stop atomic.Bool
	var requests, failures atomic.Int64
	var seen sync.Map
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			// Bounded: at most 5000 requests per client.
			for i := 0; i < 5000 && !stop.Load(); i++ {
				resp, err := c.Get("http://" + addr + "/load")
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				requests.Add(1)
				if err != nil || resp.StatusCode != http.StatusOK {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("status %d, body %q, err %v", resp.StatusCode, b, err))
					continue
				}
				var got echo.Request
				if err := json.Unmarshal(b, &got); err == nil {
					seen.Store(got.Backend, true)
				}
			}
		}()
	}
	// A connection that moved to net/http stays there, so the clients
	// start on the fast path before the first reload turns it off.
	eventually(t, 10*time.Second, "requests on the fast path", func() bool {
		v, _ := metricValue(t, l7.admin, `tidegate_l7_fast_path_requests_total{listener="edge"}`)
		return v >= 20
	})
	for i, step := range []struct {
		target string
		fast   bool
	}{{"b", false}, {"a", true}, {"b", true}, {"a", false}, {"b", true}} {
		rewrite(body(step.target, step.fast))
		n := requests.Load()
		eventually(t, 10*time.Second, fmt.Sprintf("requests flow after reload %d", i), func() bool {
			return requests.Load() > n+20
		})
	}
	stop.Store(true)
	wg.Wait()

	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d requests failed across reloads, first: %v", n, requests.Load(), firstErr.Load())
	}
	for _, name := range []string{"a", "b"} {
		if _, ok := seen.Load(name); !ok {
			t.Errorf("no response from backend %s", name)
		}
	}
	fast, _ := metricValue(t, l7.admin, `tidegate_l7_fast_path_requests_total{listener="edge"}`)
	if fast == 0 {
		t.Errorf("the fast path served no request of %d", requests.Load())
	}
	if v, _ := metricValue(t, l7.admin, `tidegate_l7_fast_path_handoffs_total{listener="edge",reason="settings"}`); v == 0 {
		t.Error("no connection moved to net/http when fast_path went off")
	}
}

// TestL7FastPathDrainPipelined sends SIGTERM while keep-alive connections
// on the fast path have pipelined requests in flight. Each connection must
// end between responses: every response that starts arrives whole, and
// the proxy exits once the backends have responded.
func TestL7FastPathDrainPipelined(t *testing.T) {
	dir := t.TempDir()
	release := make(chan struct{})
	var started atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started.Add(1)
			<-release
		}
		_, _ = io.WriteString(w, strings.Repeat("x", 1000))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })

	addr := freeAddr(t)
	l7 := startL7(t, dir, fmt.Sprintf(`listeners:
  - name: edge
    address: %s
routes:
  - name: all
    upstream: web
upstreams:
  - name: web
    backends:
      - address: %s
`, addr, ln.Addr()), "shutdown_delay: 0s")

	const conns = 4
	pipeline := "GET /a HTTP/1.1\r\nHost: d\r\n\r\nGET /slow HTTP/1.1\r\nHost: d\r\n\r\nGET /b HTTP/1.1\r\nHost: d\r\n\r\nGET /c HTTP/1.1\r\nHost: d\r\n\r\n"
	type result struct {
		complete int
		err      error
	}
	results := make(chan result, conns)
	for range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, pipeline); err != nil {
			t.Fatal(err)
		}
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			r := bufio.NewReader(c)
			n := 0
			for {
				resp, err := http.ReadResponse(r, nil)
				if err != nil {
					// The connection may end only before a response.
					if err == io.EOF || strings.Contains(err.Error(), "connection reset") && n > 0 {
						results <- result{n, nil}
					} else {
						results <- result{n, err}
					}
					return
				}
				b, err := io.ReadAll(resp.Body)
				if err != nil || len(b) != 1000 {
					results <- result{n, fmt.Errorf("response %d cut at %d bytes: %v", n+1, len(b), err)}
					return
				}
				n++
				if resp.Close {
					results <- result{n, nil}
					return
				}
			}
		}()
	}
	eventually(t, 10*time.Second, "slow requests reach the backend", func() bool { return started.Load() == conns })
	if err := l7.signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Let the drain start before the backends respond.
	time.Sleep(200 * time.Millisecond)
	close(release)
	for range conns {
		r := <-results
		if r.err != nil {
			t.Errorf("connection ended badly after %d responses: %v", r.complete, r.err)
		}
		if r.complete < 2 {
			t.Errorf("connection got %d responses, want at least the two sent before the drain", r.complete)
		}
	}
	if !l7.wait(15 * time.Second) {
		t.Fatal("proxy did not exit after the drain")
	}
}

// TestL7FastPathPoliciesStillApply configures access rules, a rate limit,
// rewrites, a redirect, compression and caching on routes, and sends the
// same GET requests to a listener with the fast path and one without.
// Every policy must act the same on both, which means the fast path hands
// those requests to net/http.
func TestL7FastPathPoliciesStillApply(t *testing.T) {
	dir := t.TempDir()
	web, _ := startEcho(t, "web")
	fastAddr, generalAddr := freeAddr(t), freeAddr(t)
	l7 := startL7(t, dir, fmt.Sprintf(`listeners:
  - name: fast
    address: %s
  - name: general
    address: %s
    fast_path: false
cache:
  max_size: 16MiB
routes:
  - name: deny
    match: {path_prefix: /deny/}
    upstream: web
    policy:
      access:
        allow: ["10.0.0.0/8"]
  - name: limited
    match: {path_prefix: /limited/}
    upstream: web
    policy:
      rate_limit: {requests: 1, per: 1m, burst: 1, key: "header:X-Key"}
  - name: rewritten
    match: {path_prefix: /old/}
    upstream: web
    policy:
      rewrite:
        path: {replace_prefix: {from: /old, to: /new}}
        request_headers:
          set: {X-Added: "yes"}
        response_headers:
          set: {X-Response-Added: "yes"}
  - name: redirect
    match: {path_prefix: /moved/}
    upstream: web
    policy:
      rewrite:
        redirect: {status: 308, location: "https://elsewhere.test${request_uri}"}
  - name: compressed
    match: {path_prefix: /zip/}
    upstream: web
    policy:
      compress:
        encodings: [gzip]
        min_size: 10B
        content_types: [application/json]
  - name: cached
    match: {path_prefix: /cached/}
    upstream: web
    cache:
      enabled: true
      heuristic: true
  - name: plain
    upstream: web
upstreams:
  - name: web
    backends:
      - address: %s
`, fastAddr, generalAddr, web), "shutdown_delay: 0s")
	addrs := map[string]string{"fast": fastAddr, "general": generalAddr}

	type outcome struct {
		status                               int
		location, encoding, vary, added, uri string
	}
	do := func(listener, path string, hdr map[string]string) outcome {
		t.Helper()
		req, err := http.NewRequest("GET", "http://"+addrs[listener]+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		tr := &http.Transport{DisableCompression: true}
		defer tr.CloseIdleConnections()
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s on %s: %v", path, listener, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		o := outcome{
			status:   resp.StatusCode,
			location: resp.Header.Get("Location"),
			encoding: resp.Header.Get("Content-Encoding"),
			vary:     resp.Header.Get("Vary"),
			added:    resp.Header.Get("X-Response-Added"),
		}
		var got echo.Request
		if json.Unmarshal(b, &got) == nil {
			o.uri = got.URI + " x-added=" + strings.Join(got.Headers["X-Added"], ",")
		}
		return o
	}
	fastBefore, _ := metricValue(t, l7.admin, `tidegate_l7_fast_path_requests_total{listener="fast"}`)
	cases := []struct {
		path string
		hdr  map[string]string
	}{
		{"/deny/x", nil},
		{"/old/page?q=1", nil},
		{"/moved/a?b=c", nil},
		{"/zip/data", map[string]string{"Accept-Encoding": "gzip"}},
		{"/cached/item", nil},
	}
	for _, tc := range cases {
		fast, general := do("fast", tc.path, tc.hdr), do("general", tc.path, tc.hdr)
		if fast != general {
			t.Errorf("%s: fast path listener gave %+v, net/http %+v", tc.path, fast, general)
		}
	}
	if v, _ := metricValue(t, l7.admin, `tidegate_l7_fast_path_requests_total{listener="fast"}`); v != fastBefore {
		t.Errorf("the fast path served %v policy requests, want none", v-fastBefore)
	}
	// The rate limit counts per key, so each listener has its own.
	for _, listener := range []string{"fast", "general"} {
		first := do(listener, "/limited/a", map[string]string{"X-Key": listener})
		second := do(listener, "/limited/a", map[string]string{"X-Key": listener})
		if first.status != 200 || second.status != http.StatusTooManyRequests {
			t.Errorf("%s: rate limited route gave %d then %d, want 200 then 429", listener, first.status, second.status)
		}
	}
	// Without Accept-Encoding the compressed route passes through, and
	// both paths add the same Vary field.
	fast, general := do("fast", "/zip/plain", nil), do("general", "/zip/plain", nil)
	if fast != general || fast.vary == "" {
		t.Errorf("/zip/plain without Accept-Encoding: fast path %+v, net/http %+v; want equal with Vary", fast, general)
	}
	if v, _ := metricValue(t, l7.admin, `tidegate_l7_fast_path_handoffs_total{listener="fast",reason="route"}`); v == 0 {
		t.Error("no request on a policy route was handed to net/http")
	}
}

// TestL7FastPathCacheHitsMatch fills the cache through net/http and then
// sends the same hits, a conditional request and a HEAD to a listener
// with the fast path and one without. The client must get the same
// response from both, apart from Date, Age and the request ID.
func TestL7FastPathCacheHitsMatch(t *testing.T) {
	dir := t.TempDir()
	var backendHits atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		backendHits.Add(1)
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Vary", "X-Variant")
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		_, _ = io.WriteString(w, "cached body for "+r.URL.Path+" "+r.Header.Get("X-Variant"))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })

	fastAddr, generalAddr := freeAddr(t), freeAddr(t)
	l7 := startL7(t, dir, fmt.Sprintf(`listeners:
  - name: fast
    address: %s
  - name: general
    address: %s
    fast_path: false
cache:
  max_size: 16MiB
routes:
  - name: cached
    upstream: web
    cache:
      enabled: true
upstreams:
  - name: web
    backends:
      - address: %s
`, fastAddr, generalAddr, ln.Addr()), "shutdown_delay: 0s")
	addrs := map[string]string{"fast": fastAddr, "general": generalAddr}

	do := func(listener, method string, hdr map[string]string) string {
		t.Helper()
		c, err := net.Dial("tcp", addrs[listener])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		req := method + " /item HTTP/1.1\r\nHost: cache.test\r\nConnection: close\r\n"
		for k, v := range hdr {
			req += k + ": " + v + "\r\n"
		}
		_, _ = io.WriteString(c, req+"\r\n")
		raw, _ := io.ReadAll(c)
		head, body, _ := strings.Cut(string(raw), "\r\n\r\n")
		var keep []string
		for _, line := range strings.Split(head, "\r\n") {
			name, _, _ := strings.Cut(line, ":")
			switch strings.ToLower(name) {
			case "date", "age", "x-request-id":
				continue
			}
			keep = append(keep, line)
		}
		slices.Sort(keep[1:])
		return strings.Join(keep, "\n") + "\n\n" + body
	}
	// Fill the cache for both variants.
	do("general", "GET", nil)
	do("general", "GET", map[string]string{"X-Variant": "b"})
	filled := backendHits.Load()
	for _, tc := range []struct {
		method string
		hdr    map[string]string
	}{
		{"GET", nil},
		{"GET", map[string]string{"X-Variant": "b"}},
		{"GET", map[string]string{"If-None-Match": `"v1"`}},
		{"HEAD", nil},
		{"GET", map[string]string{"Accept-Encoding": "gzip"}},
	} {
		general, fast := do("general", tc.method, tc.hdr), do("fast", tc.method, tc.hdr)
		if general != fast {
			t.Errorf("%s %v:\nnet/http:\n%s\nfast path:\n%s", tc.method, tc.hdr, general, fast)
		}
	}
	if n := backendHits.Load(); n != filled {
		t.Errorf("backend got %d requests for cache hits, want 0", n-filled)
	}
	if v, _ := metricValue(t, l7.admin, `tidegate_l7_fast_path_requests_total{listener="fast"}`); v < 4 {
		t.Errorf("the fast path served %v of the cache hits, want at least 4", v)
	}
}
