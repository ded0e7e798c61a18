package l7

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidegate/tidegate/l7/upstream"
)

// These tests attack the HTTP/1.1 fast path with requests and backend
// responses that a careless proxy gets wrong, and compare what the fast
// path does with what net/http does on a listener with fast_path: false.

// attackGet sends one request to addr on a new connection and returns
// the response and its body, or the error.
func attackGet(t *testing.T, addr, method, path string, hdr http.Header) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// TestFastPathAttackLargeResponseHead sends response heads larger than the
// fast path's 4 KiB backend buffer, and with more than 100 fields. The
// transport of the net/http path reads heads up to 10 MiB, so an
// application with large cookies or security policies must not get 502
// only because the fast path took its request.
func TestFastPathAttackLargeResponseHead(t *testing.T) {
	heads := map[string]string{
		"/5k":     "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 5<<10) + "\r\nContent-Length: 2\r\n\r\nok",
		"/20k":    "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("b", 20<<10) + "\r\nContent-Length: 2\r\n\r\nok",
		"/fields": "HTTP/1.1 200 OK\r\n" + strings.Repeat("Set-Cookie: a=b\r\n", 150) + "Content-Length: 2\r\n\r\nok",
		"/chunk":  "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("c", 6<<10) + "\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
	}
	addr := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		for {
			line := readRequestHead(r)
			if line == "" {
				return
			}
			_, _ = io.WriteString(c, heads[strings.Fields(line)[1]])
		}
	})
	_, addrs := startL7(t, fmt.Sprintf(twoListeners, addr))
	for _, path := range []string{"/5k", "/20k", "/fields", "/chunk", "/5k", "/fields"} {
		for _, listener := range []string{"general", "fast"} {
			resp, body, err := attackGet(t, addrs[listener], "GET", path, nil)
			if err != nil {
				t.Errorf("%s on %s: %v", path, listener, err)
				continue
			}
			if resp.StatusCode != 200 || body != "ok" {
				t.Errorf("%s on %s: %d %q, want 200 ok", path, listener, resp.StatusCode, body)
			}
			if path == "/fields" && len(resp.Header.Values("Set-Cookie")) != 150 {
				t.Errorf("%s on %s: %d Set-Cookie fields, want 150", path, listener, len(resp.Header.Values("Set-Cookie")))
			}
		}
	}
}

// TestFastPathAttackLateBytesOnIdleBackend uses a backend that sends more
// than the response it announced, after the response: a body after a HEAD
// response and bytes beyond Content-Length, each shaped as a whole
// response. The extra bytes arrive once the proxy has put the connection
// back in its pool. The next request, from another client, must not get
// them as its response.
func TestFastPathAttackLateBytesOnIdleBackend(t *testing.T) {
	const poison = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned"
	type testCase struct {
		name, listener, method, first string
	}
	var cases []testCase
	for _, listener := range []string{"general", "fast"} {
		cases = append(cases,
			testCase{"head with body on " + listener, listener, "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n"},
			testCase{"body beyond length on " + listener, listener, "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sent := make(chan struct{})
			late := make(chan struct{})
			addr := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
				for n := 0; ; n++ {
					line := readRequestHead(r)
					if line == "" {
						return
					}
					if strings.Contains(line, "/first") {
						_, _ = io.WriteString(c, tc.first)
						<-sent
						_, _ = io.WriteString(c, poison)
						close(late)
						continue
					}
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal")
				}
			})
			_, addrs := startL7(t, fmt.Sprintf(twoListeners, addr))
			resp, _, err := attackGet(t, addrs[tc.listener], tc.method, "/first", nil)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("first request: %v %v", resp, err)
			}
			close(sent)
			<-late
			// The poison is in the proxy's socket buffer now: loopback
			// delivers a write before it returns.
			for i := range 3 {
				resp, body, err := attackGet(t, addrs[tc.listener], "GET", "/second", nil)
				if err != nil {
					t.Fatalf("request %d after the late bytes: %v", i, err)
				}
				if resp.StatusCode != 200 || body != "real" {
					t.Errorf("request %d after the late bytes: %d %q, want 200 real", i, resp.StatusCode, body)
				}
			}
		})
	}
}

// TestFastPathAttackTransferCodings sends responses whose body has a
// content coding in Transfer-Encoding. The fast path must not relay the
// decoded framing without the coding, which would hand the client gzip
// bytes it cannot know about. net/http responds with 502.
func TestFastPathAttackTransferCodings(t *testing.T) {
	responses := map[string]string{
		"/gzip-chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nzz\r\n0\r\n\r\n",
		"/gzip":         "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz",
		"/two-fields":   "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nzz\r\n0\r\n\r\n",
	}
	addr := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		line := readRequestHead(r)
		if line == "" {
			return
		}
		_, _ = io.WriteString(c, responses[strings.Fields(line)[1]])
	})
	_, addrs := startL7(t, fmt.Sprintf(twoListeners, addr))
	for path := range responses {
		var statuses [2]int
		for i, listener := range []string{"general", "fast"} {
			resp, body, err := attackGet(t, addrs[listener], "GET", path, nil)
			switch {
			case err != nil:
				statuses[i] = -1
			default:
				statuses[i] = resp.StatusCode
				if resp.StatusCode == 200 && resp.Header.Get("Transfer-Encoding") == "" && resp.Header.Get("Content-Encoding") == "" {
					t.Errorf("%s on %s: 200 with body %q and no coding named", path, listener, body)
				}
			}
		}
		if statuses[0] != statuses[1] {
			t.Errorf("%s: net/http gave %d, the fast path %d", path, statuses[0], statuses[1])
		}
	}
}

// TestFastPathAttackDuplicateRequestID sends two X-Request-Id fields. Both
// paths must pick the same one, the first, as http.Header.Get does, for
// the response, the backend and the access log.
func TestFastPathAttackDuplicateRequestID(t *testing.T) {
	var seen [2]atomic.Value
	addr := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		for {
			req, err := http.ReadRequest(r)
			if err != nil {
				return
			}
			i := 0
			if req.URL.Path == "/fast" {
				i = 1
			}
			seen[i].Store(strings.Join(req.Header.Values("X-Request-Id"), "|"))
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	_, addrs := startL7(t, fmt.Sprintf(twoListeners, addr))
	hdr := http.Header{"X-Request-Id": {"first-id", "second-id"}}
	var ids [2]string
	for i, listener := range []string{"general", "fast"} {
		resp, _, err := attackGet(t, addrs[listener], "GET", "/"+listener, hdr)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = strings.Join(resp.Header.Values("X-Request-Id"), "|")
	}
	if ids[0] != ids[1] {
		t.Errorf("response X-Request-Id: net/http %q, fast path %q", ids[0], ids[1])
	}
	if a, b := seen[0].Load(), seen[1].Load(); a != b {
		t.Errorf("backend saw X-Request-Id: net/http %q, fast path %q", a, b)
	}
}

// TestFastPathAttackSplitHeads sends request heads of 4095, 4096 and 4097
// bytes, around the client read buffer, split in two writes at many
// offsets, and a small head split at every offset. Each must get one
// correct response, and so must a second request pipelined after it.
func TestFastPathAttackSplitHeads(t *testing.T) {
	var requests atomic.Int64
	addr := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		for {
			req, err := http.ReadRequest(r)
			if err != nil {
				return
			}
			requests.Add(1)
			body := req.URL.Path + " " + fmt.Sprint(len(req.Header.Get("X-Pad")))
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	})
	_, addrs := startL7(t, fmt.Sprintf(oneListener, addr))

	head := func(size int) (string, int) {
		base := "GET /a HTTP/1.1\r\nHost: split.test\r\nX-Pad: \r\n\r\n"
		pad := size - len(base)
		return "GET /a HTTP/1.1\r\nHost: split.test\r\nX-Pad: " + strings.Repeat("p", pad) + "\r\n\r\n", pad
	}
	check := func(what, h string, pad int, offsets []int) {
		for _, off := range offsets {
			c, err := net.Dial("tcp", addrs["fast"])
			if err != nil {
				t.Fatal(err)
			}
			c.(*net.TCPConn).SetNoDelay(true)
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			second := "GET /b HTTP/1.1\r\nHost: split.test\r\nConnection: close\r\n\r\n"
			_, _ = io.WriteString(c, h[:off])
			// A response to a partial head would be a bug; give the
			// proxy a moment to send one so the check below can see it.
			time.Sleep(time.Millisecond)
			_, _ = io.WriteString(c, h[off:]+second)
			out, _ := io.ReadAll(c)
			c.Close()
			r := bufio.NewReader(strings.NewReader(string(out)))
			for _, want := range []string{fmt.Sprintf("/a %d", pad), "/b 0"} {
				resp, err := http.ReadResponse(r, nil)
				if err != nil {
					t.Fatalf("%s split at %d: reading response %q: %v in %q", what, off, want, err, out)
				}
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || string(b) != want {
					t.Errorf("%s split at %d: %d %q, want 200 %q", what, off, resp.StatusCode, b, want)
				}
			}
			if rest, _ := io.ReadAll(r); len(rest) > 0 {
				t.Errorf("%s split at %d: extra bytes after the responses: %q", what, off, rest)
			}
		}
	}
	small, pad := head(60)
	all := make([]int, 0, len(small))
	for i := 1; i < len(small); i++ {
		all = append(all, i)
	}
	check("60-byte head", small, pad, all)
	for _, size := range []int{4095, 4096, 4097} {
		h, pad := head(size)
		check(fmt.Sprintf("%d-byte head", size), h, pad, []int{1, 17, 2048, size - 4, size - 3, size - 2, size - 1})
	}
}

// TestFastPathAttackClientGone closes the client connection while the
// backend is slow to respond. The request must be logged as 499 and the
// backend connection closed, as on the net/http path.
func TestFastPathAttackClientGone(t *testing.T) {
	backendGone := make(chan string, 2)
	addr := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		line := readRequestHead(r)
		if line == "" {
			return
		}
		// Wait for the proxy to give up: it closes the connection.
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err := r.ReadByte()
		backendGone <- fmt.Sprintf("%s: %v", line, err)
	})
	logPath := filepath.Join(t.TempDir(), "access.log")
	yaml := strings.Replace(fmt.Sprintf(twoListeners, addr), `access_log: {path: "off"}`, "access_log: {path: "+logPath+"}", 1)
	_, addrs := startL7(t, yaml)
	for _, listener := range []string{"general", "fast"} {
		c, err := net.Dial("tcp", addrs[listener])
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, "GET /slow-"+listener+" HTTP/1.1\r\nHost: gone.test\r\n\r\n")
		// Give the request time to reach the backend before the close.
		time.Sleep(100 * time.Millisecond)
		c.Close()
		select {
		case got := <-backendGone:
			if !strings.Contains(got, "EOF") {
				t.Errorf("%s: backend read after client close: %s, want EOF", listener, got)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("%s: backend request not abandoned after the client left", listener)
		}
	}
	waitForLog(t, logPath, `"status":499`, "/slow-", 2)
}

// TestReadResponseHeadInPieces feeds response heads around and above the
// 4 KiB backend buffer to DirectConn.PeekHead a few bytes at a time. The
// blank line ending the head thus arrives split at every place. The head
// must end where it does, and the body must stay in the buffer.
func TestReadResponseHeadInPieces(t *testing.T) {
	for _, size := range []int{60, 4095, 4096, 4097, 9000} {
		pad := size - len("HTTP/1.1 200 OK\r\nX-Pad: \r\nContent-Length: 4\r\n\r\n")
		head := "HTTP/1.1 200 OK\r\nX-Pad: " + strings.Repeat("p", pad) + "\r\nContent-Length: 4\r\n\r\n"
		for _, piece := range []int{1, 2, 3, 7, 4096} {
			proxySide, backendSide := net.Pipe()
			go func() {
				msg := head + "body"
				for len(msg) > 0 {
					n := min(piece, len(msg))
					if _, err := io.WriteString(backendSide, msg[:n]); err != nil {
						return
					}
					msg = msg[n:]
				}
			}()
			_ = proxySide.SetDeadline(time.Now().Add(10 * time.Second))
			bc := &upstream.DirectConn{Conn: proxySide, R: bufio.NewReaderSize(proxySide, 4<<10)}
			got, err := bc.PeekHead()
			if err != nil {
				t.Fatalf("%d-byte head in %d-byte pieces: %v", size, piece, err)
			}
			if string(got) != head {
				t.Errorf("%d-byte head in %d-byte pieces: got %d bytes, want %d", size, piece, len(got), len(head))
			}
			var resp h1Response
			if err := parseResponse(got, &resp); err != nil || resp.contentLength != 4 {
				t.Errorf("%d-byte head in %d-byte pieces: parse: length %d, %v", size, piece, resp.contentLength, err)
			}
			_, _ = bc.R.Discard(len(got))
			body := make([]byte, 4)
			if _, err := io.ReadFull(bc.R, body); err != nil || string(body) != "body" {
				t.Errorf("%d-byte head in %d-byte pieces: body %q, %v", size, piece, body, err)
			}
			proxySide.Close()
			backendSide.Close()
		}
	}
}

// TestFastPathAttackClientGoneMidBody closes the client connection after
// the first body bytes while the backend stalls in the middle of the
// body. The backend connection must be closed, as net/http does when the
// request's context ends, instead of waiting for the stalled backend.
func TestFastPathAttackClientGoneMidBody(t *testing.T) {
	backendGone := make(chan string, 2)
	sent := make(chan struct{}, 2)
	addr := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		if readRequestHead(r) == "" {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst part")
		sent <- struct{}{}
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err := r.ReadByte()
		backendGone <- fmt.Sprint(err)
	})
	logPath := filepath.Join(t.TempDir(), "access.log")
	yaml := strings.Replace(fmt.Sprintf(twoListeners, addr), `access_log: {path: "off"}`, "access_log: {path: "+logPath+"}", 1)
	_, addrs := startL7(t, yaml)
	for _, listener := range []string{"general", "fast"} {
		c, err := net.Dial("tcp", addrs[listener])
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, "GET /stall HTTP/1.1\r\nHost: stall.test\r\n\r\n")
		<-sent
		// Let the proxy relay what it has before the client leaves.
		time.Sleep(100 * time.Millisecond)
		c.Close()
		select {
		case got := <-backendGone:
			if !strings.Contains(got, "EOF") && !strings.Contains(got, "reset") {
				t.Errorf("%s: backend read after client close: %s, want EOF", listener, got)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("%s: backend connection kept open after the client left mid-body", listener)
		}
	}
	waitForLog(t, logPath, `"status":499`, "/stall", 2)
}

// waitForLog waits until the access log at path has want lines that
// contain both status and path.
func waitForLog(t *testing.T, path, status, target string, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		n := 0
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, status) && strings.Contains(l, target) {
				n++
			}
		}
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("access log has %d lines with %s for %s, want %d:\n%s", n, status, target, want, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFastPathAttackOddRequests sends request heads that parsers disagree
// on to a fast-path listener and a net/http one, each followed by a plain
// pipelined request, and checks that both give the same statuses and that
// the backend receives the same requests. A difference would mean the fast
// path took a request that net/http frames or routes otherwise.
func TestFastPathAttackOddRequests(t *testing.T) {
	var mu sync.Mutex
	seen := map[string][]string{}
	addr := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		for {
			req, err := http.ReadRequest(r)
			if err != nil {
				return
			}
			body, _ := io.ReadAll(req.Body)
			port := req.Header.Get("X-Forwarded-Port")
			mu.Lock()
			seen[port] = append(seen[port], fmt.Sprintf("%s %s host=%q body=%q", req.Method, req.RequestURI, req.Host, body))
			mu.Unlock()
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	_, addrs := startL7(t, fmt.Sprintf(twoListeners, addr))
	const next = "GET /next HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
	heads := []string{
		"GET /a HTTP/1.1\r\nHost: a\r\nX-Fold: one\r\n two\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: a, b\r\n\r\n",
		"GET http://a/x HTTP/1.1\r\nHost: b\r\n\r\n",
		"GET /a HTTP/1.1\nHost: a\n\n",
		"GET /a HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: a\r\nContent-Length: 0, 0\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
		"GET /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n",
		"get /a HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /a HTTP/1.10\r\nHost: a\r\n\r\n",
		"GET /a HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost : a\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: a\r\nX: \x7f\r\n\r\n",
		"GET /a%2e%2e/b?q=%zz HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /a/../b HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET //a HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close, x-drop\r\nX-Drop: 1\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: A.Example:80\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost:\r\n\r\n",
		"GET /a HTTP/1.1\r\n\r\n",
		"HEAD /a HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: a\r\nX-Long: " + strings.Repeat("l", 5000) + "\r\n\r\n",
	}
	statuses := func(out string) []string {
		var got []string
		r := bufio.NewReader(strings.NewReader(out))
		for {
			resp, err := http.ReadResponse(r, nil)
			if err != nil {
				return got
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			got = append(got, resp.Status)
		}
	}
	for _, head := range heads {
		mu.Lock()
		clear(seen)
		mu.Unlock()
		var got [2][]string
		for i, listener := range []string{"general", "fast"} {
			got[i] = statuses(rawExchange(t, addrs[listener], head+next, 2*time.Second))
		}
		if fmt.Sprint(got[0]) != fmt.Sprint(got[1]) {
			t.Errorf("%q: net/http gave %v, the fast path %v", head, got[0], got[1])
		}
		mu.Lock()
		var backend [2][]string
		for port, reqs := range seen {
			i := 0
			if strings.HasSuffix(addrs["fast"], ":"+port) {
				i = 1
			}
			backend[i] = reqs
		}
		mu.Unlock()
		if fmt.Sprint(backend[0]) != fmt.Sprint(backend[1]) {
			t.Errorf("%q: backend saw %v from net/http, %v from the fast path", head, backend[0], backend[1])
		}
	}
}

// TestFastPathAttackBackendDown sends requests to a pool with a backend
// that refuses connections and one retry, and then fills max_requests with
// a slow request. Both paths must retry to the live backend and respond
// with 503 beyond max_requests.
func TestFastPathAttackBackendDown(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	release := make(chan struct{})
	slowStarted := make(chan struct{}, 1)
	live := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		for {
			line := readRequestHead(r)
			if line == "" {
				return
			}
			if strings.Contains(line, "/slow") {
				slowStarted <- struct{}{}
				<-release
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	yaml := fmt.Sprintf(`
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
      balance: round_robin
      retries: 1
      max_requests: 1
      backends: [{address: %q}, {address: %q}]
`, deadAddr, live)
	_, addrs := startL7(t, yaml)
	for _, listener := range []string{"general", "fast"} {
		for i := range 4 {
			resp, body, err := attackGet(t, addrs[listener], "GET", "/", nil)
			if err != nil || resp.StatusCode != 200 || body != "ok" {
				t.Errorf("%s request %d with a dead backend: %v %q %v, want 200 ok", listener, i, resp, body, err)
			}
		}
	}
	for _, listener := range []string{"general", "fast"} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _, _ = attackGet(t, addrs[listener], "GET", "/slow", nil)
		}()
		<-slowStarted
		resp, _, err := attackGet(t, addrs[listener], "GET", "/", nil)
		if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s request beyond max_requests: %v %v, want 503", listener, resp, err)
		}
		release <- struct{}{}
		<-done
	}
}

// TestFastPathAttackBackendMisbehaves sends each request to a backend that
// breaks HTTP/1.1 in its own way, on both paths, and checks that the
// statuses match and that the next request, on the same client
// connection, still gets through.
func TestFastPathAttackBackendMisbehaves(t *testing.T) {
	responses := map[string]string{
		"/garbage":      "this is not http\r\n\r\n",
		"/early-close":  "HTTP/1.1 200 OK\r\nContent-Le",
		"/flood":        strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 40) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/switch":       "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n",
		"/bad-chunk":    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
		"/chunk-trail":  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a=b\r\nok\r\n0\r\nX-T: 1\r\n\r\n",
		"/http10":       "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/http10-close": "HTTP/1.0 200 OK\r\n\r\nuntil close",
		"/conn-close":   "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
		"/big-status":   "HTTP/1.1 999 Odd\r\nContent-Length: 2\r\n\r\nok",
		"/no-reason":    "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
		"/space-name":   "HTTP/1.1 200 OK\r\nX Bad: 1\r\nContent-Length: 2\r\n\r\nok",
		"/space-colon":  "HTTP/1.1 200 OK\r\nX-Odd : 1\r\nContent-Length: 2\r\n\r\nok",
		"/tab-colon":    "HTTP/1.1 200 OK\r\nX-Odd\t: 1\r\nContent-Length: 2\r\n\r\nok",
		"/space-length": "HTTP/1.1 200 OK\r\nContent-Length : 9\r\nContent-Length: 2\r\n\r\nok",
		"/space-te":     "HTTP/1.1 200 OK\r\nTransfer-Encoding : chunked\r\nContent-Length: 2\r\n\r\nok",
		"/spaces-colon": "HTTP/1.1 200 OK\r\nX-Odd    : 1\r\nContent-Length: 2\r\n\r\nok",
		"/mixed-colon":  "HTTP/1.1 200 OK\r\nX-Odd \t : 1\r\nContent-Length: 2\r\n\r\nok",
		"/blank-name":   "HTTP/1.1 200 OK\r\n : 1\r\nContent-Length: 2\r\n\r\nok",
		"/status-000":   "HTTP/1.1 000 Zero\r\nContent-Length: 2\r\n\r\nok",
		"/status-099":   "HTTP/1.1 099 Low\r\nContent-Length: 2\r\n\r\nok",
		"/status-600":   "HTTP/1.1 600 High\r\nContent-Length: 2\r\n\r\nok",
		"/100-body":     "HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/1xx-space":    "HTTP/1.1 103 Early Hints\r\nLink : </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/1xx-conn":     "HTTP/1.1 103 Early Hints\r\nConnection : close\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/trail-space":  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T : 1\r\n\r\n",
		"/trail-length": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nContent-Length : 1\r\n\r\n",
	}
	addr := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		for {
			line := readRequestHead(r)
			if line == "" {
				return
			}
			path := strings.Fields(line)[1]
			resp, ok := responses[path]
			if !ok {
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
				continue
			}
			_, _ = io.WriteString(c, resp)
			switch path {
			case "/early-close", "/http10", "/http10-close", "/conn-close", "/switch", "/garbage", "/bad-chunk",
				"/status-000", "/status-099", "/100-body", "/trail-length":
				return
			}
		}
	})
	_, addrs := startL7(t, fmt.Sprintf(twoListeners, addr))
	// NOTE: the paths differ on a tab between a field name and its colon.
	// net/http's parser, which the general path uses, rejects the head
	// (502), and the fast path removes the tab as it removes spaces (RFC
	// 9112 section 5.1). The test pins both outcomes.
	stricter := map[string][2]string{
		"/tab-colon":   {`502 "Bad Gateway\n" complete=true`, `200 "ok" complete=true`},
		"/mixed-colon": {`502 "Bad Gateway\n" complete=true`, `200 "ok" complete=true`},
	}
	// readFinal reads the next final response, skipping 1xx ones.
	readFinal := func(r *bufio.Reader) (*http.Response, error) {
		for {
			resp, err := http.ReadResponse(r, nil)
			if err != nil || resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
				return resp, err
			}
		}
	}
	for path := range responses {
		var got [2]string
		for i, listener := range []string{"general", "fast"} {
			c, err := net.Dial("tcp", addrs[listener])
			if err != nil {
				t.Fatal(err)
			}
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			r := bufio.NewReader(c)
			_, _ = io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: m\r\n\r\n")

			resp, err := readFinal(r)
			if err != nil {
				// A failure before or during the body is the same to
				// the client: it did not get a response.
				got[i] = "failed"
				c.Close()
				continue
			}

			body, berr := io.ReadAll(resp.Body)
			got[i] = fmt.Sprintf("%d %q complete=%v", resp.StatusCode, body, berr == nil)
			if berr != nil {
				got[i] = "failed"
			}
			if berr == nil && !resp.Close {
				_, _ = io.WriteString(c, "GET /after HTTP/1.1\r\nHost: m\r\n\r\n")
				next, err := readFinal(r)
				if err != nil {
					t.Errorf("%s on %s: next request on the same connection: %v", path, listener, err)
				} else if b, _ := io.ReadAll(next.Body); next.StatusCode != 200 || string(b) != "next" {
					t.Errorf("%s on %s: next request: %d %q", path, listener, next.StatusCode, b)
				}
			}
			c.Close()
		}
		t.Logf("%s: general %s, fast %s", path, got[0], got[1])
		if want, ok := stricter[path]; ok {
			if got != want {
				t.Errorf("%s: got %q, want %q", path, got, want)
			}
			continue
		}
		if got[0] != got[1] {
			t.Errorf("%s: net/http gave %s, the fast path %s", path, got[0], got[1])
		}
	}
}

// TestBackendFieldNameSpaceRemoved has the backend put a space between a
// field name and its colon: both paths forward the field without it, as
// RFC 9112 section 5.1 requires of a proxy.
func TestBackendFieldNameSpaceRemoved(t *testing.T) {
	addr := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		for readRequestHead(r) != "" {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Odd : 1\r\nX-Odd: 2\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	_, addrs := startL7(t, fmt.Sprintf(twoListeners, addr))
	for _, listener := range []string{"general", "fast"} {
		c, err := net.Dial("tcp", addrs[listener])
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.WriteString(c, "GET /odd HTTP/1.1\r\nHost: m\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil {
			t.Fatalf("%s: read response: %v", listener, err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d, want 200", listener, resp.StatusCode)
		}
		// net/http's header map does not keep the order between the two
		// names, so the general path may put 2 first.
		got := slices.Sorted(slices.Values(resp.Header.Values("X-Odd")))
		if !slices.Equal(got, []string{"1", "2"}) {
			t.Errorf("%s: X-Odd values %q, want 1 and 2", listener, got)
		}
		for name := range resp.Header {
			if strings.ContainsAny(name, " \t") {
				t.Errorf("%s: forwarded field name %q still has whitespace", listener, name)
			}
		}
	}
}

// TestFastPathAttackClientNeverReads requests a large body and never
// reads it. write_timeout must end the request on both paths: the client
// connection closes and the backend connection with it.
func TestFastPathAttackClientNeverReads(t *testing.T) {
	backendDone := make(chan error, 2)
	addr := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		if readRequestHead(r) == "" {
			return
		}
		const size = 256 << 20
		_, _ = io.WriteString(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", size))
		_ = c.SetWriteDeadline(time.Now().Add(20 * time.Second))
		buf := make([]byte, 64<<10)
		var err error
		for sent := 0; sent < size && err == nil; sent += len(buf) {
			_, err = c.Write(buf)
		}
		backendDone <- err
	})
	yaml := strings.Replace(fmt.Sprintf(twoListeners, addr), "address: 127.0.0.1:0", "address: 127.0.0.1:0\n      write_timeout: 1s", 1)
	yaml = strings.Replace(yaml, "fast_path: false", "fast_path: false\n      write_timeout: 1s", 1)
	_, addrs := startL7(t, yaml)
	for _, listener := range []string{"general", "fast"} {
		c, err := net.Dial("tcp", addrs[listener])
		if err != nil {
			t.Fatal(err)
		}
		_ = c.(*net.TCPConn).SetReadBuffer(4 << 10)
		_, _ = io.WriteString(c, "GET /big HTTP/1.1\r\nHost: big.test\r\n\r\n")
		select {
		case err := <-backendDone:
			if err == nil {
				t.Errorf("%s: the backend sent the whole body to a client that reads nothing", listener)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("%s: backend still sending 15s after write_timeout (1s) should have ended the request", listener)
		}
		c.Close()
	}
}
