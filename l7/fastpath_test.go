package l7

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tidegate/tidegate/l7/cache"
	"github.com/tidegate/tidegate/l7/passthrough"
	"github.com/tidegate/tidegate/shared/config"
)

// startL7 starts a server from the l7 section in yaml (without the "l7:"
// line) and returns it with the address of each listener.
func startL7(t *testing.T, yaml string, opts ...Option) (*Server, map[string]string) {
	t.Helper()
	f, err := config.Parse([]byte("l7:\n" + yaml))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(f, slog.New(slog.DiscardHandler), nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Drain(ctx)
	})
	addrs := map[string]string{}
	for name, a := range s.Addrs() {
		addrs[name] = a.String()
	}
	return s, addrs
}

// echoHeaders responds with the request's method, target and header fields
// as JSON, plus responses shaped by the path.
func echoHeaders(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/chunked":
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Trailer", "X-Sum")
		_, _ = io.WriteString(w, "first part,")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "second part")
		w.Header().Set("X-Sum", "22")
		return
	case "/empty":
		w.WriteHeader(http.StatusNoContent)
		return
	case "/notmodified":
		w.Header().Set("ETag", `"v1"`)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body, _ := json.Marshal(map[string]any{"method": r.Method, "target": r.RequestURI, "header": r.Header})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Request-Id", "from-backend")
	w.Header().Set("Connection", "X-Hop")
	w.Header().Set("X-Hop", "must not reach the client")
	w.Header().Set("Keep-Alive", "timeout=5")
	_, _ = w.Write(body)
}

const twoListeners = `
  access_log: {path: "off"}
  listeners:
    - name: fast
      address: 127.0.0.1:0
    - name: general
      address: 127.0.0.2:0
      fast_path: false
  routes:
    - name: all
      match: {path_prefix: /}
      upstream: web
  upstreams:
    - name: web
      backends: [{address: %q}]
`

// TestFastPathMatchesGeneralPath sends the same requests through a
// listener on the fast path and one on net/http and checks that the
// backend and the client see the same thing.
func TestFastPathMatchesGeneralPath(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(echoHeaders))
	defer backend.Close()
	s, addrs := startL7(t, fmt.Sprintf(twoListeners, strings.TrimPrefix(backend.URL, "http://")))

	type result struct {
		status  int
		header  http.Header
		trailer http.Header
		body    string
	}
	do := func(listener, method, target string, hdr map[string]string) result {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+addrs[listener]+target, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "app.test"
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s %s on %s: %v", method, target, listener, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s on %s: read body: %v", method, target, listener, err)
		}
		h := resp.Header.Clone()
		if h.Get("Date") == "" {
			t.Errorf("%s %s on %s: no Date field", method, target, listener)
		}
		if id := h.Get("X-Request-Id"); len(id) != 32 && id != "client-id-1" {
			t.Errorf("%s %s on %s: X-Request-Id = %q, want the proxy's", method, target, listener, id)
		}
		h.Del("Date")
		h.Del("X-Request-Id")
		return result{resp.StatusCode, h, resp.Trailer, string(b)}
	}

	spoof := map[string]string{
		"X-Forwarded-For":     "203.0.113.9",
		"X-Forwarded-Prefix":  "/evil",
		"Forwarded":           "for=203.0.113.9",
		"X-Real-Ip":           "203.0.113.9",
		"Proxy-Authorization": "Basic c2VjcmV0",
		"Keep-Alive":          "timeout=100",
		"Accept":              "text/html",
		"X-Request-Id":        "client-id-1",
	}
	cases := []struct {
		method, target string
		hdr            map[string]string
	}{
		{"GET", "/json?a=1&b=%20x", spoof},
		{"HEAD", "/json", nil},
		{"GET", "/chunked", nil},
		{"GET", "/empty", nil},
		{"GET", "/notmodified", map[string]string{"If-None-Match": `"v1"`}},
	}
	for _, tc := range cases {
		fast := do("fast", tc.method, tc.target, tc.hdr)
		general := do("general", tc.method, tc.target, tc.hdr)
		if fast.status != general.status || fast.body != general.body && !strings.HasPrefix(fast.body, "{") {
			t.Errorf("%s %s: fast path gave %d %q, net/http %d %q", tc.method, tc.target, fast.status, fast.body, general.status, general.body)
		}
		if !reflect.DeepEqual(fast.header, general.header) {
			t.Errorf("%s %s: response fields differ:\nfast:    %v\nnet/http: %v", tc.method, tc.target, fast.header, general.header)
		}
		if !reflect.DeepEqual(fast.trailer, general.trailer) {
			t.Errorf("%s %s: trailers differ: fast %v, net/http %v", tc.method, tc.target, fast.trailer, general.trailer)
		}
		if strings.HasPrefix(fast.body, "{") {
			compareEchoedRequests(t, tc.method+" "+tc.target, fast.body, general.body, addrs)
		}
	}
	if got := testutil.ToFloat64(s.metrics.fastRequests.WithLabelValues("fast")); got != float64(len(cases)) {
		t.Errorf("fast path requests = %v, want %d", got, len(cases))
	}
	if got := testutil.ToFloat64(s.metrics.fastRequests.WithLabelValues("general")); got != 0 {
		t.Errorf("fast path requests on the general listener = %v, want 0", got)
	}
}

// compareEchoedRequests checks that the backend saw the same request from
// both listeners, apart from the listener port.
func compareEchoedRequests(t *testing.T, request, fastBody, generalBody string, addrs map[string]string) {
	t.Helper()
	type echoed struct {
		Method, Target string
		Header         http.Header
	}
	var fast, general echoed
	if err := json.Unmarshal([]byte(fastBody), &fast); err != nil {
		t.Fatalf("%s: %v in %q", request, err, fastBody)
	}
	if err := json.Unmarshal([]byte(generalBody), &general); err != nil {
		t.Fatalf("%s: %v in %q", request, err, generalBody)
	}

	// The listeners differ in port only.
	_, fastPort, _ := net.SplitHostPort(addrs["fast"])
	_, generalPort, _ := net.SplitHostPort(addrs["general"])
	if got := fast.Header.Get("X-Forwarded-Port"); got != fastPort {
		t.Errorf("%s: fast path X-Forwarded-Port = %q, want %s", request, got, fastPort)
	}
	if got := general.Header.Get("X-Forwarded-Port"); got != generalPort {
		t.Errorf("%s: net/http X-Forwarded-Port = %q, want %s", request, got, generalPort)
	}
	fast.Header.Del("X-Forwarded-Port")
	general.Header.Del("X-Forwarded-Port")
	if !reflect.DeepEqual(fast, general) {
		t.Errorf("%s: backend saw different requests:\nfast:     %+v\nnet/http: %+v", request, fast, general)
	}

	for _, name := range []string{"Proxy-Authorization", "Keep-Alive", "X-Forwarded-Prefix"} {
		if v := fast.Header.Get(name); v != "" {
			t.Errorf("%s: backend got %s: %q", request, name, v)
		}
	}
	if got := fast.Header.Get("X-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("%s: X-Forwarded-For = %q, want the client only", request, got)
	}
}

// rawBackend serves each connection with serve, for responses that
// net/http would not send.
func rawBackend(t *testing.T, serve func(c net.Conn, r *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	return ln.Addr().String()
}

// readRequestHead reads one request head from r and returns its first
// line, or "" when the connection ended.
func readRequestHead(r *bufio.Reader) string {
	tp := textproto.NewReader(r)
	line, err := tp.ReadLine()
	if err != nil {
		return ""
	}
	if _, err := tp.ReadMIMEHeader(); err != nil {
		return ""
	}
	return line
}

const oneListener = `
  access_log: {path: "off"}
  listeners:
    - name: fast
      address: 127.0.0.1:0
      idle_timeout: 30s
  routes:
    - name: all
      match: {path_prefix: /}
      upstream: web
  upstreams:
    - name: web
      response_header_timeout: 2s
      backends: [{address: %q}]
`

// rawExchange writes raw to a new connection to addr and returns everything
// the proxy sends until it closes the connection or goes quiet for wait.
func rawExchange(t *testing.T, addr, raw string, wait time.Duration) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	buf := make([]byte, 4096)
	for {
		_ = c.SetReadDeadline(time.Now().Add(wait))
		n, err := c.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			return out.String()
		}
	}
}

func TestFastPathResponseFraming(t *testing.T) {
	responses := map[string]string{
		"/close-delimited":   "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
		"/chunked-ext":       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\nX-Trailer: yes\r\n\r\n",
		"/te-and-cl":         "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"/bare-lf":           "HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
		"/informational-bad": "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nnot a status line\r\n\r\n",
		"/informational":     "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/folded":            "HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 2\r\n\r\nok",
		"/two-lengths":       "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
		"/bad-status":        "HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
		"/switching":         "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
		"/short-body":        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
		"/huge-head":         "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 11<<20) + "\r\nContent-Length: 2\r\n\r\nok",
	}
	addr := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		for {
			line := readRequestHead(r)
			if line == "" {
				return
			}
			path := strings.Fields(line)[1]
			_, _ = io.WriteString(c, responses[path])
			if path == "/close-delimited" || path == "/short-body" || path == "/informational" {
				return
			}
		}
	})
	// Reading the 11 MiB head takes seconds under the race detector on a
	// loaded machine, so the head timeout is longer than the shared one.
	_, addrs := startL7(t, strings.Replace(fmt.Sprintf(oneListener, addr), "response_header_timeout: 2s", "response_header_timeout: 30s", 1))
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()

	get := func(path string) (*http.Response, string, error) {
		resp, err := client.Get("http://" + addrs["fast"] + path)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, string(b), err
	}

	resp, body, err := get("/close-delimited")
	if err != nil || body != "until the end" || resp.TransferEncoding == nil {
		t.Errorf("close-delimited: body %q, transfer encoding %v, err %v; want the body, chunked", body, resp.TransferEncoding, err)
	}
	resp, body, err = get("/chunked-ext")
	if err != nil || body != "hello" || resp.Trailer.Get("X-Trailer") != "yes" {
		t.Errorf("chunked with extension: body %q, trailer %v, err %v", body, resp.Trailer, err)
	}
	resp, body, err = get("/te-and-cl")
	if err != nil || body != "ok" || resp.ContentLength != -1 {
		t.Errorf("Transfer-Encoding with Content-Length: body %q, length %d, err %v; want chunked body ok", body, resp.ContentLength, err)
	}
	if _, body, err = get("/bare-lf"); err != nil || body != "ok" {
		t.Errorf("bare LF response: body %q, err %v", body, err)
	}

	var got1xx []int
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		got1xx = append(got1xx, code)
		if h.Get("Link") == "" {
			t.Errorf("1xx response without its Link field")
		}
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "http://"+addrs["fast"]+"/informational", nil)
	if resp, err := client.Do(req); err != nil {
		t.Errorf("informational: %v", err)
	} else {
		resp.Body.Close()
		if !reflect.DeepEqual(got1xx, []int{103}) || resp.StatusCode != 200 {
			t.Errorf("informational: got 1xx %v and %d, want [103] and 200", got1xx, resp.StatusCode)
		}
	}

	for _, path := range []string{"/folded", "/two-lengths", "/bad-status", "/switching", "/huge-head", "/informational-bad"} {
		resp, _, err := get(path)
		if err != nil || resp.StatusCode != http.StatusBadGateway {
			t.Errorf("%s: got %v, %v; want 502", path, resp, err)
		}
	}
	if _, _, err := get("/short-body"); err == nil {
		t.Error("a body cut short by the backend reached the client as complete")
	}
}

// TestFastPathHandOff checks that a connection moves to net/http at the
// first request the fast path does not take, with nothing lost, and that
// pipelined requests get their responses in order.
func TestFastPathHandOff(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, b)
	}))
	defer backend.Close()
	s, addrs := startL7(t, fmt.Sprintf(oneListener, strings.TrimPrefix(backend.URL, "http://")))

	raw := "GET /one HTTP/1.1\r\nHost: a\r\n\r\n" +
		"GET /two HTTP/1.1\r\nHost: a\r\n\r\n" +
		"POST /three HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody" +
		"GET /four HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
	out := rawExchange(t, addrs["fast"], raw, 3*time.Second)
	r := bufio.NewReader(strings.NewReader(out))
	for _, want := range []string{"GET /one ", "GET /two ", "POST /three body", "GET /four "} {
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("reading response for %q: %v in %q", want, err, out)
		}
		b, _ := io.ReadAll(resp.Body)
		if string(b) != want {
			t.Errorf("response = %q, want %q", b, want)
		}
	}
	if got := testutil.ToFloat64(s.metrics.fastRequests.WithLabelValues("fast")); got != 2 {
		t.Errorf("fast path requests = %v, want 2", got)
	}
	if got := testutil.ToFloat64(s.metrics.fastHandOffs.WithLabelValues("fast", handOffRequest)); got != 1 {
		t.Errorf("handoffs = %v, want 1", got)
	}
}

// TestFastPathRetriesStaleConnection uses a backend that closes every
// connection after one response without saying so. The next request finds
// the pooled connection closed and must get through on a new one.
func TestFastPathRetriesStaleConnection(t *testing.T) {
	var conns atomic.Int32
	addr := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		conns.Add(1)
		if readRequestHead(r) == "" {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	_, addrs := startL7(t, fmt.Sprintf(oneListener, addr))
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	for i := range 5 {
		resp, err := client.Get("http://" + addrs["fast"] + "/")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
		// Let the backend's close reach the proxy's socket.
		time.Sleep(20 * time.Millisecond)
	}
	if n := conns.Load(); n < 5 {
		t.Errorf("backend saw %d connections, want one per request", n)
	}
}

// TestFastPathDrain checks that a drain closes idle fast-path connections
// and lets a request in flight finish with Connection: close.
func TestFastPathDrain(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
		io.WriteString(w, "done")
	}))
	defer backend.Close()
	f, err := config.Parse([]byte("l7:\n" + fmt.Sprintf(oneListener, strings.TrimPrefix(backend.URL, "http://"))))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(f, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	addr := s.Addrs()["fast"].String()

	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idleReader := bufio.NewReader(idle)
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, err := http.ReadResponse(idleReader, nil); err != nil {
		t.Fatal(err)
	} else {
		io.Copy(io.Discard, resp.Body)
	}

	busy, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	<-entered

	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		drained <- s.Drain(ctx)
	}()
	// The idle connection is closed without a response.
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := idleReader.Read(make([]byte, 1)); err == nil {
		t.Errorf("idle connection read %d bytes during drain, want EOF", n)
	}
	select {
	case err := <-drained:
		t.Fatalf("drain returned %v with a request in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	resp, err := http.ReadResponse(bufio.NewReader(busy), nil)
	if err != nil {
		t.Fatalf("request in flight: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "done" || !resp.Close {
		t.Errorf("request in flight got %q, close %v; want done with Connection: close", b, resp.Close)
	}
	if err := <-drained; err != nil {
		t.Errorf("drain: %v", err)
	}
}

// varyMiddleware passes every request through and adds a field to the
// response head, as the compress middleware does for clients that accept
// no encoding.
type varyMiddleware struct{ next http.Handler }

func (m varyMiddleware) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Add("X-Edited", strconv.Itoa(0))
	m.next.ServeHTTP(w, r)
}

func (m varyMiddleware) PassThrough(r *passthrough.Request) (http.Handler, func(int, passthrough.Head), bool) {
	if len(r.Values("X-Needs-General")) > 0 {
		return nil, nil, false
	}
	return m.next, func(status int, h passthrough.Head) { h.Add("X-Edited", strconv.Itoa(status)) }, true
}

func TestFastPathPassThroughMiddleware(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer backend.Close()
	mw := WithMiddleware("edit", func(_ *config.L7, _ *config.Route, next http.Handler) (http.Handler, error) {
		return varyMiddleware{next}, nil
	})
	s, addrs := startL7(t, fmt.Sprintf(oneListener, strings.TrimPrefix(backend.URL, "http://")), mw)
	get := func(hdr string) string {
		req, _ := http.NewRequest("GET", "http://"+addrs["fast"]+"/", nil)
		if hdr != "" {
			req.Header.Set(hdr, "1")
		}
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("X-Edited")
	}
	if got := get(""); got != "200" {
		t.Errorf("fast path edit: X-Edited = %q, want 200", got)
	}
	if got := get("X-Needs-General"); got != "0" {
		t.Errorf("general path: X-Edited = %q, want 0", got)
	}
	if got := testutil.ToFloat64(s.metrics.fastHandOffs.WithLabelValues("fast", handOffRoute)); got != 1 {
		t.Errorf("route handoffs = %v, want 1", got)
	}
}

// BenchmarkFastPathRaw measures the fast path alone: the client and the
// backend are raw sockets that write fixed bytes, so the allocations
// reported are the proxy's.
func BenchmarkFastPathRaw(b *testing.B) {
	const response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for readRequestHead(r) != "" {
					if _, err := io.WriteString(c, response); err != nil {
						return
					}
				}
			}()
		}
	}()

	f, err := config.Parse([]byte("l7:\n" + fmt.Sprintf(oneListener, ln.Addr().String())))
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(f, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Drain(ctx)
	}()

	c, err := net.Dial("tcp", s.Addrs()["fast"].String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	request := []byte("GET /bench?q=1 HTTP/1.1\r\nHost: app.test\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(request); err != nil {
			b.Fatal(err)
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// FuzzFastPathConn writes arbitrary bytes to a fast-path listener in front
// of a backend that responds to every request it can parse. The proxy must
// not crash, must close or respond on every connection, and must send the backend
// only requests that parse.
func FuzzFastPathConn(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx"))
	f.Add([]byte("HEAD /x?y HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))
	f.Add([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))

	var badRequests atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(r)
					if err != nil {
						if err != io.EOF && !strings.Contains(err.Error(), "closed") && !strings.Contains(err.Error(), "reset") {
							badRequests.Add(1)
						}
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
						return
					}
				}
			}()
		}
	}()
	cfg, err := config.Parse([]byte("l7:\n" + fmt.Sprintf(oneListener, ln.Addr().String())))
	if err != nil {
		f.Fatal(err)
	}
	cfg.L7.Listeners[0].ReadHeaderTimeout = config.Duration(200 * time.Millisecond)
	cfg.L7.Listeners[0].IdleTimeout = config.Duration(200 * time.Millisecond)
	s, err := New(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		f.Fatal(err)
	}
	if err := s.Start(); err != nil {
		f.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Drain(ctx)
	}()
	addr := s.Addrs()["fast"].String()

	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(in); err != nil {
			return
		}
		_ = c.(*net.TCPConn).CloseWrite()
		// The idle and header timeouts close the connection well before
		// this deadline.
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil && !strings.Contains(err.Error(), "reset") {
			t.Fatalf("proxy neither answered nor closed: %v", err)
		}
		if n := badRequests.Load(); n > 0 {
			t.Fatalf("backend received %d requests it could not parse", n)
		}
	})
}

// TestFastPathCacheHits checks that fresh cache hits are served on the
// fast path with the response net/http would send, and that a miss moves
// the connection to net/http.
func TestFastPathCacheHits(t *testing.T) {
	var backendHits atomic.Int32
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		backendHits.Add(1)
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "cached body")
	}))
	defer backend.Close()
	logPath := t.TempDir() + "/access.log"
	yaml := fmt.Sprintf(strings.Replace(twoListeners, `access_log: {path: "off"}`, "access_log: {path: %s}", 1), logPath, strings.TrimPrefix(backend.URL, "http://"))
	s := startCachedL7(t, yaml)
	addrs := s.Addrs()

	get := func(listener string, hdr map[string]string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+addrs[listener].String()+"/c?x=1", nil)
		// One host for both listeners, since the cache key includes it.
		req.Host = "app.test"
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		// A new connection per request, so each one starts on the fast path.
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	first, _ := get("fast", nil) // a miss: handed to net/http, which stores it
	if first.Header.Get("Cache-Status") == "" {
		t.Fatalf("no Cache-Status on the first response: %v", first.Header)
	}
	fastHit, fastBody := get("fast", nil)
	generalHit, generalBody := get("general", nil)
	if backendHits.Load() != 1 {
		t.Errorf("backend got %d requests, want 1", backendHits.Load())
	}
	if got := testutil.ToFloat64(s.metrics.fastRequests.WithLabelValues("fast")); got != 1 {
		t.Errorf("fast path requests = %v, want the one hit", got)
	}
	if fastBody != "cached body" || fastBody != generalBody || fastHit.StatusCode != generalHit.StatusCode {
		t.Errorf("fast hit %d %q, net/http hit %d %q", fastHit.StatusCode, fastBody, generalHit.StatusCode, generalBody)
	}
	for _, h := range []http.Header{fastHit.Header, generalHit.Header} {
		for _, name := range []string{"Date", "X-Request-Id", "Age"} {
			if h.Get(name) == "" {
				t.Errorf("hit without %s: %v", name, h)
			}
			h.Del(name)
		}
	}
	if !reflect.DeepEqual(fastHit.Header, generalHit.Header) {
		t.Errorf("hit fields differ:\nfast:     %v\nnet/http: %v", fastHit.Header, generalHit.Header)
	}

	// A request for a HEAD gets the stored fields without the body.
	req, _ := http.NewRequest("HEAD", "http://"+addrs["fast"].String()+"/c?x=1", nil)
	req.Host = "app.test"
	head, err := (&http.Transport{DisableKeepAlives: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	head.Body.Close()
	if head.StatusCode != 200 || head.ContentLength != 11 || !strings.HasPrefix(head.Header.Get("Cache-Status"), "tidegate; hit") {
		t.Errorf("HEAD hit: %d, length %d, Cache-Status %q", head.StatusCode, head.ContentLength, head.Header.Get("Cache-Status"))
	}
	log, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), `"cache":"hit"`); n < 3 {
		t.Errorf("access log has %d hit lines, want at least 3:\n%s", n, log)
	}
}

// BenchmarkFastPathCacheHit measures fresh cache hits served on the fast
// path, with a raw client, so the allocations reported are the proxy's.
func BenchmarkFastPathCacheHit(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, strings.Repeat("c", 128))
	}))
	defer backend.Close()
	s := startCachedL7(b, fmt.Sprintf(oneListener, strings.TrimPrefix(backend.URL, "http://")))

	request := []byte("GET /cached HTTP/1.1\r\nHost: app.test\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	exchange := func(c net.Conn, r *bufio.Reader) *http.Response {
		if _, err := c.Write(request); err != nil {
			b.Fatal(err)
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	// The miss goes to net/http, which keeps the connection, so the hits
	// use a second one.
	prime, err := net.Dial("tcp", s.Addrs()["fast"].String())
	if err != nil {
		b.Fatal(err)
	}
	exchange(prime, bufio.NewReader(prime))
	prime.Close()

	conn, err := net.Dial("tcp", s.Addrs()["fast"].String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	if resp := exchange(conn, r); !strings.HasPrefix(resp.Header.Get("Cache-Status"), "tidegate; hit") {
		b.Fatalf("Cache-Status %q, want a hit", resp.Header.Get("Cache-Status"))
	}
	b.ReportAllocs()
	for b.Loop() {
		exchange(conn, r)
	}
}

// startCachedL7 starts a server from the l7 section in yaml, with a cache
// on its first route inside the middlewares of outer, that records hits
// and misses in the access log, and drains it when tb ends.
func startCachedL7(tb testing.TB, yaml string, outer ...Option) *Server {
	tb.Helper()
	s, _ := startCachedL7WithCache(tb, yaml, outer...)
	return s
}

// startCachedL7WithCache is startCachedL7 that also returns the cache,
// for tests that purge it.
func startCachedL7WithCache(tb testing.TB, yaml string, outer ...Option) (*Server, *cache.Cache) {
	tb.Helper()
	yaml = strings.Replace(yaml, "      upstream: web\n", "      upstream: web\n      cache: {enabled: true}\n", 1)
	f, err := config.Parse([]byte("l7:\n" + yaml))
	if err != nil {
		tb.Fatal(err)
	}
	cc := cache.ConfigFrom(f.L7.Cache)
	cc.OnResult = func(r *http.Request, result string) {
		if lf := LogFields(r); lf != nil {
			lf.Cache = result
		}
	}
	c, err := cache.New(cc, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		tb.Fatal(err)
	}
	mw := WithMiddleware("cache", func(_ *config.L7, rt *config.Route, next http.Handler) (http.Handler, error) {
		return c.Middleware(cache.PolicyFrom(rt.Name, rt.Cache), next), nil
	})
	s, err := New(f, slog.New(slog.DiscardHandler), nil, append(outer, mw)...)
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Drain(ctx)
	})
	return s, c
}

// TestFastPathBackendReuseAfterDeadline leaves a pooled backend
// connection idle past the head deadline of its last exchange, which stays
// set, and checks that the next requests on both paths reuse it.
func TestFastPathBackendReuseAfterDeadline(t *testing.T) {
	backend, conns := countingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	})
	_, addrs := startL7(t, fmt.Sprintf(twoListeners, strings.TrimPrefix(backend.URL, "http://")))

	for i, listener := range []string{"fast", "fast", "general", "fast"} {
		if i > 0 {
			time.Sleep(watchDelay + 200*time.Millisecond)
		}
		path := fmt.Sprintf("/r%d", i)
		resp, err := http.Get("http://" + addrs[listener] + path)
		if err != nil {
			t.Fatalf("request %d on %s: %v", i, listener, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != path {
			t.Errorf("request %d on %s: %d %q, want 200 %q", i, listener, resp.StatusCode, body, path)
		}
	}
	if got := conns.Load(); got != 1 {
		t.Errorf("backend accepted %d connections for four sequential requests, want 1", got)
	}
}

// TestFastPathIdleTimeoutFollowsRequests sends requests on one connection
// more often than the idle timeout for several timeouts, so that readHead
// must move its idle deadline, then stays quiet until the proxy closes the
// connection.
func TestFastPathIdleTimeoutFollowsRequests(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer backend.Close()
	yaml := strings.Replace(oneListener, "idle_timeout: 30s", "idle_timeout: 400ms", 1)
	_, addrs := startL7(t, fmt.Sprintf(yaml, strings.TrimPrefix(backend.URL, "http://")))

	c, err := net.Dial("tcp", addrs["fast"])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	for i := range 12 {
		// Bursts of requests, then a pause shorter than the timeout.
		for range 20 {
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"); err != nil {
				t.Fatalf("round %d: write: %v", i, err)
			}
			resp, err := http.ReadResponse(r, nil)
			if err != nil {
				t.Fatalf("round %d: connection closed while in use: %v", i, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		time.Sleep(150 * time.Millisecond)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := r.ReadByte(); err != io.EOF {
		t.Errorf("idle connection: read %v, %v, want EOF from the idle timeout", n, err)
	}
}

// countingBackend starts a backend serving h that counts the connections
// it accepts, and closes it when t ends.
func countingBackend(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	conns := new(atomic.Int32)
	backend := httptest.NewUnstartedServer(h)
	backend.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	backend.Start()
	t.Cleanup(backend.Close)
	return backend, conns
}
