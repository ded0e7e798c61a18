package l7

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/tidegate/tidegate/l7/upstream"
	"github.com/tidegate/tidegate/shared/config"
)

// These tests attack the direct backend exchange of the general path
// (requests without a body to cleartext HTTP/1.1 backends) as a hostile
// client and with misbehaving backends. Each runs the same requests
// through a pool that uses direct connections and one that
// [upstream.WithoutDirect] keeps on net/http's transport, and compares.

// recordingBackend is an HTTP/1.1 backend on 127.0.0.1 that records the raw
// request heads it reads and lets respond write anything on the
// connection. respond returns false to close the connection. It reads no
// request bodies, so the requests sent to it must have none.
type recordingBackend struct {
	addr     string
	accepted atomic.Int32
	// closed counts the connections that ended, whichever side closed.
	closed atomic.Int32
	mu     sync.Mutex
	heads  []string
}

func newRecordingBackend(t *testing.T, respond func(c net.Conn, head string, n int) bool) *recordingBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &recordingBackend{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			b.accepted.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer b.closed.Add(1)
				defer c.Close()
				r := bufio.NewReader(c)
				for n := 0; ; n++ {
					var head strings.Builder
					for {
						line, err := r.ReadString('\n')
						if err != nil {
							return
						}
						head.WriteString(line)
						if line == "\r\n" {
							break
						}
					}
					b.mu.Lock()
					b.heads = append(b.heads, head.String())
					b.mu.Unlock()
					if !respond(c, head.String(), n) {
						return
					}
				}
			}()
		}
	}()
	return b
}

func (b *recordingBackend) received() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.heads...)
}

// normalizeHead sorts the field lines of a request head and drops
// X-Request-Id and X-Forwarded-Port, which differ per request and per
// listener, so heads sent by the two pools compare equal when they carry
// the same fields.
func normalizeHead(head string) string {
	lines := strings.Split(strings.TrimSuffix(head, "\r\n\r\n"), "\r\n")
	fields := lines[1:]
	kept := fields[:0]
	for _, f := range fields {
		name, _, _ := strings.Cut(strings.ToLower(f), ":")
		if name != "x-request-id" && name != "x-forwarded-port" {
			kept = append(kept, f)
		}
	}
	sort.Strings(kept)
	return lines[0] + "\n" + strings.Join(kept, "\n")
}

const exchangeAttackConfig = `
  access_log: {path: "off"}
  listeners:
    - name: h2c
      address: 127.0.0.1:0
      h2c: true
    - name: general
      address: 127.0.0.2:0
      fast_path: false
  routes:
    - name: all
      match: {path_prefix: /}
      upstream: web
  upstreams:
    - name: web
      %s
      max_idle_per_backend: 8
      response_header_timeout: %s
      backends: [{address: %q}]
`

// startBothPaths starts two L7 servers in front of backend: one whose pool
// uses direct connections and one whose pool uses the transport.
func startBothPaths(t *testing.T, backend, headerTimeout string) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	for _, via := range []string{"direct", "transport"} {
		_, addrs := startL7(t, fmt.Sprintf(exchangeAttackConfig, "balance: round_robin", headerTimeout, backend), pathOptions(via)...)
		out[via] = addrs
	}
	return out
}

// rawH1 sends raw bytes on a new connection and returns everything read
// until the server closes or the read fails.
func rawH1(t *testing.T, addr, request string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	_, _ = io.Copy(&out, c)
	return out.String()
}

// TestExchangeAttackHTTP2Fields sends HTTP/2 requests with methods,
// authorities, targets and fields that an HTTP/1.1 request cannot carry as
// they are, and checks that the direct path gives the client the same
// status and the backend the same head as the transport.
func TestExchangeAttackHTTP2Fields(t *testing.T) {
	backend := newRecordingBackend(t, func(c net.Conn, _ string, _ int) bool {
		_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return err == nil
	})
	both := startBothPaths(t, backend.addr, "5s")
	request := func(method, authority, path string, fields ...[2]string) [][2]string {
		out := [][2]string{{":method", method}, {":scheme", "http"}, {":path", path}}
		if authority != "" {
			out = append(out, [2]string{":authority", authority})
		}
		return append(out, fields...)
	}
	cases := []struct {
		name   string
		fields [][2]string
	}{
		{"international authority", request("GET", "bücher.test", "/")},
		{"ipv6 zone in authority", request("GET", "[fe80::1%25eth0]:80", "/")},
		{"obs-text in query", request("GET", "a.test", "/q?\x80\xff")},
		{"tab in query", request("GET", "a.test", "/q?a\tb")},
		{"number sign in path", request("GET", "a.test", "/p#frag")},
		{"space and obs-text in path", request("GET", "a.test", "/p\x80 x")},
		{"options asterisk", request("OPTIONS", "a.test", "*")},
		{"obs-text in field", request("GET", "a.test", "/", [2]string{"x-obs", "caf\xe9"})},
		{"te trailers", request("GET", "a.test", "/", [2]string{"te", "trailers"})},
		{"expect on bodiless request", request("GET", "a.test", "/", [2]string{"expect", "100-continue"})},
		{"trailer field", request("GET", "a.test", "/", [2]string{"trailer", "x-t"})},
		{"host field beside authority", request("GET", "a.test", "/", [2]string{"host", "other.test"})},
		{"host field alone", request("GET", "", "/", [2]string{"host", "other.test"})},
		{"no authority", request("GET", "", "/")},
		{"space in method", request("G T", "a.test", "/")},
		{"target in method", request("GET /admin", "a.test", "/")},
		{"long target", request("GET", "a.test", "/"+strings.Repeat("a", 100000))},
		{"spaces around value", request("GET", "a.test", "/", [2]string{"x-sp", " lead and trail "})},
		{"empty user agent", request("GET", "a.test", "/", [2]string{"user-agent", ""})},
		{"bodiless post", request("POST", "a.test", "/")},
		{"content-length zero", request("GET", "a.test", "/", [2]string{"content-length", "0"})},
		{"connection field", request("GET", "a.test", "/", [2]string{"connection", "close"})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got [2]string
			for i, via := range []string{"direct", "transport"} {
				before := len(backend.received())
				status, body := h2Exchange(t, both[via]["h2c"], tc.fields)
				heads := backend.received()
				sent := "nothing"
				if len(heads) > before {
					sent = normalizeHead(heads[len(heads)-1])
				}
				got[i] = fmt.Sprintf("%s %q, backend received:\n%s", status, body, sent)
			}
			if got[0] != got[1] {
				t.Errorf("direct path: %s\ntransport: %s", got[0], got[1])
			}
			if strings.Contains(tc.name, "method") && !strings.HasSuffix(got[0], "nothing") {
				t.Errorf("backend received a request with an invalid method: %s", got[0])
			}
		})
	}
}

// misbehavingResponse writes the response of the backend of
// TestExchangeAttackBackendResponses for a request path on c, and reports
// whether the connection stays open.
func misbehavingResponse(c net.Conn, path string) bool {
	const ok = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext"
	write := func(s string) bool {
		_, err := io.WriteString(c, s)
		return err == nil
	}
	switch path {
	case "/head-with-body":
		// A body after a HEAD response, shaped as a whole response.
		return write("HTTP/1.1 200 OK\r\nContent-Length: 38\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil")
	case "/no-content-with-body":
		return write("HTTP/1.1 204 No Content\r\nContent-Length: 38\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil")
	case "/not-modified-with-body":
		return write("HTTP/1.1 304 Not Modified\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil")
	case "/beyond-length":
		return write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil")
	case "/in-pieces":
		for _, piece := range []string{"HTTP/1.1 2", "00 OK\r\nContent-Le", "ngth: 2\r", "\n\r", "\no", "k"} {
			if !write(piece) {
				return false
			}
			time.Sleep(5 * time.Millisecond)
		}
		return true
	case "/many-informational":
		return write(strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n", 50) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	case "/continue":
		return write("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	case "/close-delimited":
		write("HTTP/1.1 200 OK\r\n\r\nok")
		return false
	case "/http10":
		write("HTTP/1.0 200 OK\r\n\r\nok")
		return false
	case "/connection-close":
		write("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
		return false
	case "/switching":
		write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: upgrade\r\n\r\n")
		return false
	case "/garbage":
		write("NOT HTTP AT ALL\r\n\r\n")
		return false
	case "/huge-head":
		write("HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("h", 11<<20) + "\r\nContent-Length: 2\r\n\r\nok")
		return false
	case "/cut-head":
		write("HTTP/1.1 200 OK\r\nContent-Le")
		return false
	case "/reset":
		_ = c.(*net.TCPConn).SetLinger(0)
		return false
	}
	return write(ok)
}

// TestExchangeAttackBackendResponses has a backend send responses that
// are malformed, framed oddly or followed by bytes that look like another
// response. Over HTTP/1.1 with fast_path: false and over HTTP/2, the
// direct path must give the client what the transport gives, and the
// request that follows on the pooled backend connections must get its own
// response.
func TestExchangeAttackBackendResponses(t *testing.T) {
	backend := newRecordingBackend(t, func(c net.Conn, head string, _ int) bool {
		target := strings.Fields(head)[1]
		return misbehavingResponse(c, target)
	})
	cases := []struct {
		method, path string
		status       string
		body         string
	}{
		{"HEAD", "/head-with-body", "200", ""},
		{"GET", "/no-content-with-body", "204", ""},
		{"GET", "/not-modified-with-body", "304", ""},
		{"GET", "/beyond-length", "200", "ok"},
		{"GET", "/in-pieces", "200", "ok"},
		{"GET", "/many-informational", "200", "ok"},
		{"GET", "/continue", "200", "ok"},
		{"GET", "/close-delimited", "200", "ok"},
		{"GET", "/http10", "200", "ok"},
		{"GET", "/connection-close", "200", "ok"},
		{"GET", "/switching", "502", "Bad Gateway\n"},
		{"GET", "/garbage", "502", "Bad Gateway\n"},
		{"GET", "/huge-head", "502", "Bad Gateway\n"},
		{"GET", "/cut-head", "502", "Bad Gateway\n"},
		{"GET", "/reset", "502", "Bad Gateway\n"},
	}
	// Responses that leave bytes after their end on the connection. The
	// transport may give those bytes to the next request on its pool (see
	// the NOTE below), so each case gets servers of its own, and the
	// transport's result after such a response is only logged.
	leavesBytes := map[string]bool{"/head-with-body": true, "/no-content-with-body": true, "/not-modified-with-body": true, "/beyond-length": true}
	for _, tc := range cases {
		both := startBothPaths(t, backend.addr, "30s")
		for _, via := range []string{"direct", "transport"} {
			h2Status, h2Body := h2Exchange(t, both[via]["h2c"], [][2]string{
				{":method", tc.method}, {":scheme", "http"}, {":authority", "a.test"}, {":path", tc.path},
			})
			if h2Status != tc.status || h2Body != tc.body {
				t.Errorf("%s: HTTP/2 %s %s: got %s %q, want %s %q", via, tc.method, tc.path, h2Status, h2Body, tc.status, tc.body)
			}
			resp, body, err := attackGet(t, both[via]["general"], tc.method, tc.path, nil)
			switch {
			case err != nil:
				t.Errorf("%s: HTTP/1.1 %s %s: %v", via, tc.method, tc.path, err)
			case strconv.Itoa(resp.StatusCode) != tc.status || body != tc.body:
				if via == "transport" && leavesBytes[tc.path] {
					t.Logf("transport: HTTP/1.1 %s %s after the same response over HTTP/2: got %d %q", tc.method, tc.path, resp.StatusCode, body)
					break
				}
				t.Errorf("%s: HTTP/1.1 %s %s: got %d %q, want %s %q", via, tc.method, tc.path, resp.StatusCode, body, tc.status, tc.body)
			}

			// The pooled backend connections must not hand the next
			// requests anything left over from the one before.
			for range 2 {
				status, body := h2Exchange(t, both[via]["h2c"], [][2]string{
					{":method", "GET"}, {":scheme", "http"}, {":authority", "a.test"}, {":path", "/next"},
				})
				if status == "200" && body == "next" {
					continue
				}
				// NOTE: net/http's transport (Go 1.26) pools a
				// connection with bytes left in its buffer after a
				// response without a body, and a request that takes
				// it before its read loop reads them gets them as its
				// response. The direct path closes such connections.
				if via == "transport" {
					t.Logf("transport: HTTP/2 GET /next after %s: got %s %q", tc.path, status, body)
					continue
				}
				t.Errorf("%s: HTTP/2 GET /next after %s: got %s %q, want 200 \"next\"", via, tc.path, status, body)
			}
		}
	}
}

// TestExchangeAttackHeaderTimeout has a backend that reads requests and
// never responds. The client gets 504 on both paths, the request is not
// sent again, and the proxy closes the backend connection.
func TestExchangeAttackHeaderTimeout(t *testing.T) {
	var closed atomic.Int32
	backend := newRecordingBackend(t, func(c net.Conn, _ string, _ int) bool {
		_, _ = io.Copy(io.Discard, c)
		closed.Add(1)
		return false
	})
	both := startBothPaths(t, backend.addr, "200ms")
	for _, via := range []string{"direct", "transport"} {
		status, body := h2Exchange(t, both[via]["h2c"], [][2]string{
			{":method", "GET"}, {":scheme", "http"}, {":authority", "a.test"}, {":path", "/silent"},
		})
		if status != "504" || body != "Gateway Timeout\n" {
			t.Errorf("%s: HTTP/2 GET /silent: got %s %q, want 504", via, status, body)
		}
		resp, _, err := attackGet(t, both[via]["general"], "GET", "/silent", nil)
		switch {
		case err != nil:
			t.Errorf("%s: HTTP/1.1 GET /silent: %v", via, err)
		case resp.StatusCode != http.StatusGatewayTimeout:
			t.Errorf("%s: HTTP/1.1 GET /silent: got %d, want 504", via, resp.StatusCode)
		}
	}
	if got := len(backend.received()); got != 4 {
		t.Errorf("backend received %d requests for 4 that timed out, want 4", got)
	}
	waitAtomic(t, "backend connections closed by the proxy", &closed, 4)
}

// waitAtomic waits up to 5 seconds for n to reach want.
func waitAtomic(t *testing.T, what string, n *atomic.Int32, want int32) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for n.Load() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %d, want %d", what, n.Load(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// h2Open starts an HTTP/2 connection with prior knowledge and sends one
// GET for path on stream 1 without waiting for the response.
func h2Open(t *testing.T, addr, path string) (net.Conn, *http2.Framer) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "a.test"}, {":path", path}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndHeaders: true, EndStream: true}); err != nil {
		t.Fatal(err)
	}
	return c, fr
}

// TestExchangeAttackClientGone has clients leave while the backend has not
// yet sent the head of its response, and while it sends the body: by
// resetting the HTTP/2 stream, by closing the HTTP/2 connection and by
// closing the HTTP/1.1 connection. Each time the proxy must close the
// backend connection, log 499, keep the backend in service with outlier
// ejection after one failure, and give later requests their own responses
// even though the backend sends the abandoned response late.
func TestExchangeAttackClientGone(t *testing.T) {
	received := make(chan string, 16)
	release := make(chan struct{})
	backendSaw := make(chan string, 16)
	backend := newRecordingBackend(t, func(c net.Conn, head string, _ int) bool {
		path := strings.Fields(head)[1]
		switch {
		case strings.HasPrefix(path, "/hold"):
			received <- path
			<-release
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
		case strings.HasPrefix(path, "/partial"):
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n0123456789")
			received <- path
		default:
			_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
			return err == nil
		}
		// The proxy gave up on this response, so it must close the
		// connection rather than pool it: the read ends with EOF or a
		// reset, not the deadline.
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 1))
		backendSaw <- fmt.Sprintf("%s: %v", path, err)
		return false
	})

	leave := map[string]func(t *testing.T, addr, path string){
		"reset stream": func(t *testing.T, addr, path string) {
			_, fr := h2Open(t, addr, path)
			awaitBackend(t, received, path, fr)
			if err := fr.WriteRSTStream(1, http2.ErrCodeCancel); err != nil {
				t.Fatal(err)
			}
		},
		"close connection": func(t *testing.T, addr, path string) {
			c, fr := h2Open(t, addr, path)
			awaitBackend(t, received, path, fr)
			c.Close()
		},
	}
	for _, via := range []string{"direct", "transport"} {
		logPath := filepath.Join(t.TempDir(), "access.log")
		yaml := fmt.Sprintf(exchangeAttackConfig, "balance: round_robin\n      outlier: {consecutive_failures: 1, cooldown: 1m}", "30s", backend.addr)
		yaml = strings.Replace(yaml, `access_log: {path: "off"}`, "access_log: {path: "+logPath+"}", 1)
		_, addrs := startL7(t, yaml, pathOptions(via)...)

		gone := 0
		for _, stage := range []string{"/hold", "/partial"} {
			for how, do := range leave {
				path := fmt.Sprintf("%s-%s-%d", stage, via, gone)
				do(t, addrs["h2c"], path)
				gone++
				// Once the proxy has logged the request, it has let go
				// of the backend connection, and the late response
				// must not reach anyone.
				waitForLog(t, logPath, `"status":499`, `"path":"`+path+`"`, 1)
				if stage == "/hold" {
					release <- struct{}{}
				}
				if got := <-backendSaw; strings.Contains(got, "timeout") {
					t.Errorf("%s, %s during %s: backend read %s, want the connection closed", via, how, stage, got)
				}
				for range 2 {
					status, body := h2Exchange(t, addrs["h2c"], [][2]string{
						{":method", "GET"}, {":scheme", "http"}, {":authority", "a.test"}, {":path", "/next"},
					})
					if status != "200" || body != "next" {
						t.Errorf("%s, after %s during %s: GET /next got %s %q, want 200 \"next\"", via, how, stage, status, body)
					}
				}
			}
		}

		// An HTTP/1.1 client closing its connection before the head.
		c, err := net.Dial("tcp", addrs["general"])
		if err != nil {
			t.Fatal(err)
		}
		path := fmt.Sprintf("/hold-%s-h1", via)
		_, _ = io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: a.test\r\n\r\n")
		awaitBackend(t, received, path, nil)
		c.Close()
		gone++
		waitForLog(t, logPath, `"status":499`, `"path":"`+path+`"`, 1)
		release <- struct{}{}
		if got := <-backendSaw; strings.Contains(got, "timeout") {
			t.Errorf("%s, HTTP/1.1 close before the head: backend read %s, want the connection closed", via, got)
		}
		if status, body := h2Exchange(t, addrs["h2c"], [][2]string{
			{":method", "GET"}, {":scheme", "http"}, {":authority", "a.test"}, {":path", "/next"},
		}); status != "200" || body != "next" {
			t.Errorf("%s, after an HTTP/1.1 close: GET /next got %s %q, want 200 \"next\"", via, status, body)
		}
		waitForLog(t, logPath, `"status":499`, "-"+via+"-", gone)
	}
}

// awaitBackend waits until the backend has received path. With fr set, it
// reads and drops the frames the proxy sends meanwhile, so that the proxy
// never blocks on a full socket.
func awaitBackend(t *testing.T, received chan string, path string, fr *http2.Framer) {
	t.Helper()
	if fr != nil {
		go func() {
			for {
				if _, err := fr.ReadFrame(); err != nil {
					return
				}
			}
		}()
	}
	select {
	case got := <-received:
		if got != path {
			t.Fatalf("backend received %s, want %s", got, path)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("backend did not receive %s", path)
	}
}

// pathOptions returns the server options that send the pool's requests
// the way via names: on direct connections, or all through the transport.
func pathOptions(via string) []Option {
	if via == "transport" {
		return []Option{func(o *options) { o.upstreamOpts = append(o.upstreamOpts, upstream.WithoutDirect()) }}
	}
	return nil
}

// TestExchangeAttackConcurrentStreams sends many requests on one HTTP/2
// connection at once, cancels some of them at random points, and reloads
// the configuration meanwhile, which closes the old pools under requests
// in flight. Every request that completes must get the response to its
// own target, and after the drain no backend connection may stay open.
func TestExchangeAttackConcurrentStreams(t *testing.T) {
	backend := newRecordingBackend(t, func(c net.Conn, head string, n int) bool {
		path := strings.Fields(head)[1]
		var out string
		switch n % 3 {
		case 0:
			out = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(path), path)
		case 1:
			out = fmt.Sprintf("HTTP/1.1 103 Early Hints\r\nLink: <%s>\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", path, len(path), path)
		case 2:
			time.Sleep(time.Millisecond)
			out = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(path), path)
		}
		_, err := io.WriteString(c, out)
		return err == nil
	})
	yaml := fmt.Sprintf(exchangeAttackConfig, "balance: round_robin", "10s", backend.addr)
	s, addrs := startL7(t, yaml)
	file, err := config.Parse([]byte("l7:\n" + yaml))
	if err != nil {
		t.Fatal(err)
	}

	client := &http.Client{Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	const requests = 300
	var wg sync.WaitGroup
	var completed atomic.Int32
	for i := range requests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if i%4 == 0 {
				// Cancel at some point of the exchange, or after it.
				time.AfterFunc(time.Duration(i%7)*200*time.Microsecond, cancel)
			}
			path := fmt.Sprintf("/c/%d", i)
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addrs["h2c"]+path, nil)
			resp, err := client.Do(req)
			if err != nil {
				if ctx.Err() == nil {
					t.Errorf("GET %s: %v", path, err)
				}
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				if ctx.Err() == nil {
					t.Errorf("GET %s: body: %v", path, err)
				}
				return
			}
			if resp.StatusCode != http.StatusOK || string(body) != path {
				t.Errorf("GET %s: got %d %q, want 200 %q", path, resp.StatusCode, body, path)
			}
			completed.Add(1)
		}()
		if i%100 == 50 {
			if err := s.Reload(file); err != nil {
				t.Fatal(err)
			}
		}
	}
	wg.Wait()
	if completed.Load() < requests*3/4 {
		t.Errorf("%d of %d requests completed, want at least the %d never canceled", completed.Load(), requests, requests*3/4)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for backend.closed.Load() != backend.accepted.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("after the drain, %d of %d backend connections are still open", backend.accepted.Load()-backend.closed.Load(), backend.accepted.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestExchangeAttackBodyCut has the backend close the connection in the
// middle of a body, or send a chunk size that is not a number. The client
// must see the same aborted response on both paths: a reset stream over
// HTTP/2 and a closed connection over HTTP/1.1.
func TestExchangeAttackBodyCut(t *testing.T) {
	backend := newRecordingBackend(t, func(c net.Conn, head string, _ int) bool {
		responses := map[string]string{
			"/cut-length":  "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
			"/cut-chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
			"/bad-chunk":   "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
		}
		if out, ok := responses[strings.Fields(head)[1]]; ok {
			_, _ = io.WriteString(c, out)
			return false
		}
		_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
		return err == nil
	})
	both := startBothPaths(t, backend.addr, "10s")
	for _, path := range []string{"/cut-length", "/cut-chunked", "/bad-chunk"} {
		var outcome [2]string
		for i, via := range []string{"direct", "transport"} {
			status, body := h2Exchange(t, both[via]["h2c"], [][2]string{
				{":method", "GET"}, {":scheme", "http"}, {":authority", "a.test"}, {":path", path},
			})
			code := 0
			resp, h1Body, err := attackGet(t, both[via]["general"], "GET", path, nil)
			if resp != nil {
				code = resp.StatusCode
			}
			// The HTTP/1.1 status is left out: ReverseProxy flushes the
			// head of a response without Content-Length on another
			// goroutine, so the client gets it or not, on both paths.
			outcome[i] = fmt.Sprintf("HTTP/2 %s %q, HTTP/1.1 body %q", status, body, h1Body)
			if !strings.HasPrefix(status, "reset") {
				t.Errorf("%s: HTTP/2 GET %s: got %s %q, want a reset stream", via, path, status, body)
			}
			if err == nil {
				t.Errorf("%s: HTTP/1.1 GET %s: got %d %q, want the connection closed", via, path, code, h1Body)
			}
			if status, body := h2Exchange(t, both[via]["h2c"], [][2]string{
				{":method", "GET"}, {":scheme", "http"}, {":authority", "a.test"}, {":path", "/next"},
			}); status != "200" || body != "next" {
				t.Errorf("%s: GET /next after %s: got %s %q, want 200 \"next\"", via, path, status, body)
			}
		}
		if outcome[0] != outcome[1] {
			t.Errorf("GET %s: direct path: %s\ntransport: %s", path, outcome[0], outcome[1])
		}
	}
}

// TestExchangeAttackHTTP1Requests sends HTTP/1.1 and HTTP/1.0 requests
// that parsers treat differently to a fast_path: false listener, each
// followed by a pipelined request, and checks that the direct path gives
// the client and the backend what the transport gives.
func TestExchangeAttackHTTP1Requests(t *testing.T) {
	backend := newRecordingBackend(t, func(c net.Conn, _ string, _ int) bool {
		_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return err == nil
	})
	both := startBothPaths(t, backend.addr, "5s")
	reqs := []string{
		"GET /a HTTP/1.0\r\n\r\n",
		"GET /a HTTP/1.0\r\nHost: a.test\r\nConnection: keep-alive\r\n\r\n",
		"GET http://a.test/x?y HTTP/1.1\r\nHost: b.test\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n",
		"GET /" + strings.Repeat("u", 60000) + " HTTP/1.1\r\nHost: a.test\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a.test\r\nX-Obs: caf\xe9\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a.test\r\nTE: trailers\r\nConnection: TE\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close, X-Foo\r\nX-Foo: 1\r\n\r\n",
		"DELETE /d HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n",
		"GET /a%00b?c%0d%0a HTTP/1.1\r\nHost: a.test\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a.test\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a.test\r\nUser-Agent: x\r\nUser-Agent: y\r\n\r\n",
		"HEAD / HTTP/1.1\r\nHost: a.test\r\n\r\n",
	}
	// Request IDs and dates differ between any two responses.
	varying := regexp.MustCompile(`X-Request-Id: [0-9a-f]+|Date: [^\r]+`)
	for _, r := range reqs {
		var got [2]string
		for j, via := range []string{"direct", "transport"} {
			before := len(backend.received())
			resp := rawH1(t, both[via]["general"], r+"GET /end HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
			heads := backend.received()
			sent := []string{}
			for _, h := range heads[before:] {
				n := normalizeHead(h)
				if len(n) > 200 {
					n = n[:200]
				}
				sent = append(sent, n)
			}
			if len(resp) > 300 {
				resp = resp[:300]
			}
			resp = varying.ReplaceAllString(resp, "")
			resp = strings.Join(strings.Fields(resp), " ")
			got[j] = resp + "\n" + strings.Join(sent, "\n--\n")
		}
		if got[0] != got[1] {
			t.Errorf("%q:\ndirect path: %s\ntransport: %s", r[:min(len(r), 60)], got[0], got[1])
		}
	}
}
