package inspect

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// wrapListener applies WrapConn to every accepted connection.
type wrapListener struct {
	net.Listener
	lim      Limits
	onReject func(Rejection)
}

func (l wrapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return WrapConn(c, l.lim, l.onReject), nil
}

// recorder is a backend handler that records every request it receives and
// echoes the body it could read.
type recorder struct {
	mu       sync.Mutex
	requests []string
	bodyErrs []error
	hits     atomic.Int64
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec.hits.Add(1)
	body, err := io.ReadAll(r.Body)
	rec.mu.Lock()
	rec.requests = append(rec.requests, r.Method+" "+r.RequestURI+" "+string(body))
	rec.bodyErrs = append(rec.bodyErrs, err)
	rec.mu.Unlock()
	if err != nil {
		return
	}
	fmt.Fprintf(w, "got %s %s len=%d", r.Method, r.RequestURI, len(body))
}

type testServer struct {
	addr       string
	rec        *recorder
	rejections chan Rejection
}

func startServer(t *testing.T, lim Limits, handler http.Handler) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ts := &testServer{addr: ln.Addr().String(), rec: &recorder{}, rejections: make(chan Rejection, 16)}
	if handler == nil {
		handler = ts.rec
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: nil}
	go func() { _ = srv.Serve(wrapListener{ln, lim, func(r Rejection) { ts.rejections <- r }}) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ts
}

var testLimits = Limits{
	MaxRequestLine: 200,
	MaxURILength:   100,
	MaxHeaderBytes: 1000,
	MaxHeaderCount: 10,
	MaxBodyBytes:   100,
	HeaderTimeout:  5 * time.Second,
	BodyTimeout:    5 * time.Second,
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTrip writes raw and reads one response.
func roundTrip(t *testing.T, addr, raw string) (*http.Response, string, *bufio.Reader) {
	t.Helper()
	c := dial(t, addr)
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatalf("write: %v", err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response to %q: %v", raw, err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body), br
}

func TestWrapConnRejectsFraming(t *testing.T) {
	tests := []struct {
		name   string
		raw    string
		status int
		reason string
	}{
		{"cl and te", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, ReasonCLAndTE},
		{"te and cl", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400, ReasonCLAndTE},
		{"two cl equal", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400, ReasonSeveralCL},
		{"cl list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello", 400, ReasonSeveralCL},
		{"cl negative", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\nhello", 400, ReasonBadCL},
		{"cl plus", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", 400, ReasonBadCL},
		{"cl hex", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello", 400, ReasonBadCL},
		{"cl empty", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\nhello", 400, ReasonBadCL},
		{"cl huge", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\nhello", 400, ReasonBadCL},
		{"te gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nhello", 400, ReasonTENotChunked},
		{"te chunked then gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400, ReasonTENotChunked},
		{"te chunked twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, ReasonTENotChunked},
		{"te identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\nhello", 400, ReasonTENotChunked},
		{"te misspelt", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400, ReasonTENotChunked},
		{"te gzip chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, ReasonTEUnsupported},
		{"te in http10", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, ReasonTEInHTTP10},
		{"chunk size letters", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400, ReasonBadChunkSize},
		{"chunk size 0x", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", 400, ReasonBadChunkSize},
		{"chunk size negative", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", 400, ReasonBadChunkSize},
		{"chunk size leading space", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n", 400, ReasonBadChunkSize},
		{"chunk size trailing junk", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 x\r\nhello\r\n0\r\n\r\n", 400, ReasonBadChunkSize},
		{"chunk size overflow", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n", 400, ReasonBadChunkSize},
		{"chunk ext after space", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 ;x\r\nhello\r\n0\r\n\r\n", 400, ReasonBadChunkSize},
		{"chunk data without crlf", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n", 400, ReasonBadChunkEnd},
		{"chunk size empty", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n", 400, ReasonBadChunkSize},
		{"five leading crlf", strings.Repeat("\r\n", 5) + "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, ReasonBadRequestLine},
		{"chunk line bare lf", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400, ReasonBareLF},
		{"bare lf request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400, ReasonBareLF},
		{"bare lf header", "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400, ReasonBareLF},
		{"bare lf end", "GET / HTTP/1.1\r\nHost: a\r\n\n", 400, ReasonBareLF},
		{"bare cr", "GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", 400, ReasonBareCR},
		{"obs fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400, ReasonObsFold},
		{"obs fold tab", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n", 400, ReasonObsFold},
		{"space before colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n", 400, ReasonSpaceBeforeColon},
		{"space before colon te", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc", 400, ReasonSpaceBeforeColon},
		{"nul in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n", 400, ReasonControlChar},
		{"ctl in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n", 400, ReasonControlChar},
		{"del in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x7fc\r\n\r\n", 400, ReasonControlChar},
		{"no colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A b\r\n\r\n", 400, ReasonBadHeaderName},
		{"bad name", "GET / HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n", 400, ReasonBadHeaderName},
		{"missing host", "GET / HTTP/1.1\r\nX: y\r\n\r\n", 400, ReasonHostCount},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, ReasonHostCount},
		{"two spaces", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, ReasonBadRequestLine},
		{"http09", "GET /\r\n\r\n", 400, ReasonBadRequestLine},
		{"http12", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505, ReasonBadVersion},
		{"space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400, ReasonBadRequestLine},
		{"request line too long", "GET /" + strings.Repeat("a", 90) + "?" + strings.Repeat("b", 200) + " HTTP/1.1\r\nHost: a\r\n\r\n", 414, ReasonRequestLineTooLong},
		{"uri too long", "GET /" + strings.Repeat("a", 120) + " HTTP/1.1\r\nHost: a\r\n\r\n", 414, ReasonURITooLong},
		{"headers too large", "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("x", 1100) + "\r\n\r\n", 431, ReasonHeadersTooLarge},
		{"too many headers", "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X-A: b\r\n", 10) + "\r\n", 431, ReasonTooManyHeaders},
		{"cl body too large", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n", 413, ReasonBodyTooLarge},
		{"cl body too large expect", "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n", 413, ReasonBodyTooLarge},
		{"first chunk too large", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n", 413, ReasonBodyTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, testLimits, nil)
			resp, body, br := roundTrip(t, ts.addr, tc.raw)
			if resp.StatusCode != tc.status {
				t.Errorf("status = %d (%q), want %d", resp.StatusCode, body, tc.status)
			}
			if !resp.Close {
				t.Errorf("response has no Connection: close")
			}
			if !strings.Contains(body, tc.reason) {
				t.Errorf("body = %q, want it to name %q", body, tc.reason)
			}
			if _, err := br.ReadByte(); err == nil {
				t.Errorf("connection still open after the rejection")
			}
			select {
			case rej := <-ts.rejections:
				if rej.Reason != tc.reason || rej.Status != tc.status {
					t.Errorf("onReject got %+v, want reason %q status %d", rej, tc.reason, tc.status)
				}
				if rej.Client == nil || !strings.HasPrefix(rej.Client.String(), "127.0.0.1:") {
					t.Errorf("onReject client = %v, want the peer address", rej.Client)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("onReject was not called")
			}
			if n := ts.rec.hits.Load(); n != 0 {
				t.Errorf("backend handler saw %d requests, want 0: %q", n, ts.rec.requests)
			}
		})
	}
}

func TestWrapConnAcceptsValid(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		want []string // one response body per request
	}{
		{"get", "GET /a HTTP/1.1\r\nHost: a\r\n\r\n", []string{"got GET /a len=0"}},
		{"leading crlf", "\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n", []string{"got GET /a len=0"}},
		{"four leading crlf", strings.Repeat("\r\n", 4) + "GET /a HTTP/1.1\r\nHost: a\r\n\r\n", []string{"got GET /a len=0"}},
		{"crlf before each request", "\r\n\r\nGET /1 HTTP/1.1\r\nHost: a\r\n\r\n\r\n\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n\r\n\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n",
			[]string{"got GET /1 len=0", "got GET /2 len=0", "got GET /3 len=0"}},
		{"http10 no host", "GET /a HTTP/1.0\r\n\r\n", []string{"got GET /a len=0"}},
		{"content length", "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", []string{"got POST /p len=5"}},
		{"chunked with ext and trailer", "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n5;name=v\r\nhello\r\n6;x\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n", []string{"got POST /c len=11"}},
		{"body at limit", "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" + strings.Repeat("z", 100), []string{"got POST /p len=100"}},
		{"obs-text value", "GET /a HTTP/1.1\r\nHost: a\r\nX-A: caf\xc3\xa9\tb\r\n\r\n", []string{"got GET /a len=0"}},
		{"pipelined", "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcPOST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n",
			[]string{"got GET /1 len=0", "got POST /2 len=3", "got POST /3 len=2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, testLimits, nil)
			c := dial(t, ts.addr)
			if _, err := io.WriteString(c, tc.raw); err != nil {
				t.Fatalf("write: %v", err)
			}
			br := bufio.NewReader(c)
			for i, want := range tc.want {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("response %d: %v", i, err)
				}
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || string(body) != want {
					t.Errorf("response %d = %d %q, want 200 %q", i, resp.StatusCode, body, want)
				}
			}
			select {
			case rej := <-ts.rejections:
				t.Errorf("onReject called with %+v for a valid request", rej)
			default:
			}
		})
	}
}

// TestWrapConnSplitWrites sends a valid chunked request one byte per
// segment, so every state of the parser gets split input.
func TestWrapConnSplitWrites(t *testing.T) {
	ts := startServer(t, testLimits, nil)
	c := dial(t, ts.addr)
	c.(*net.TCPConn).SetNoDelay(true)
	raw := "POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nT: v\r\n\r\nGET /t HTTP/1.1\r\nHost: a\r\n\r\n"
	for i := range len(raw) {
		if _, err := c.Write([]byte{raw[i]}); err != nil {
			t.Fatalf("write byte %d: %v", i, err)
		}
	}
	br := bufio.NewReader(c)
	for _, want := range []string{"got POST /s len=3", "got GET /t len=0"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("read response: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		if string(body) != want {
			t.Errorf("body = %q, want %q", body, want)
		}
	}
}

func TestWrapConnKeepAliveThenBad(t *testing.T) {
	ts := startServer(t, testLimits, nil)
	c := dial(t, ts.addr)
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /ok HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first response = %v, %v; want 200", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	io.WriteString(c, "POST /smuggle HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("second response: %v", err)
	}
	if resp.StatusCode != 400 {
		t.Errorf("second status = %d, want 400", resp.StatusCode)
	}
	if n := ts.rec.hits.Load(); n != 1 {
		t.Errorf("backend saw %d requests, want 1: %q", n, ts.rec.requests)
	}
}

func TestWrapConnPipelinedBad(t *testing.T) {
	ts := startServer(t, testLimits, nil)
	c := dial(t, ts.addr)
	io.WriteString(c, "GET /ok HTTP/1.1\r\nHost: a\r\n\r\nGET /bad HTTP/1.1\r\nHost: a\r\nX: a\nY: b\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("first response: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "got GET /ok len=0" {
		t.Errorf("first response = %d %q, want 200 for /ok", resp.StatusCode, body)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("second response: %v", err)
	}
	if resp.StatusCode != 400 {
		t.Errorf("second status = %d, want 400", resp.StatusCode)
	}
	if n := ts.rec.hits.Load(); n != 1 {
		t.Errorf("backend saw %d requests, want 1: %q", n, ts.rec.requests)
	}
}

func TestWrapConnChunkedOverLimitMidStream(t *testing.T) {
	lim := testLimits
	lim.MaxBodyBytes = 200 << 10
	ts := startServer(t, lim, nil)
	c := dial(t, ts.addr)
	chunk := fmt.Sprintf("%x\r\n%s\r\n", 80<<10, strings.Repeat("a", 80<<10))
	go func() {
		// The server closes the connection mid-upload, so writes may fail.
		io.WriteString(c, "POST /big HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"+chunk+chunk+chunk+"0\r\n\r\n")
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	if resp.StatusCode != 413 {
		t.Errorf("status = %d, want 413", resp.StatusCode)
	}
	if rej := <-ts.rejections; rej.Reason != ReasonBodyTooLarge {
		t.Errorf("reason = %q, want %q", rej.Reason, ReasonBodyTooLarge)
	}
	// The head went through once 64KiB were valid, but the handler must
	// not get the whole body.
	deadline := time.Now().Add(5 * time.Second)
	for ts.rec.hits.Load() == 0 || len(ts.rec.snapshotErrs()) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("handler never finished reading the body")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i, err := range ts.rec.snapshotErrs() {
		if err == nil {
			t.Errorf("request %d read its whole body, want a read error", i)
		}
	}
}

func (rec *recorder) snapshotErrs() []error {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]error(nil), rec.bodyErrs...)
}

func TestWrapConnSlowHead(t *testing.T) {
	lim := testLimits
	lim.HeaderTimeout = 200 * time.Millisecond
	ts := startServer(t, lim, nil)
	c := dial(t, ts.addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	if resp.StatusCode != 408 || !resp.Close {
		t.Errorf("status = %d close=%v, want 408 with Connection: close", resp.StatusCode, resp.Close)
	}
	if n := ts.rec.hits.Load(); n != 0 {
		t.Errorf("backend saw %d requests, want 0", n)
	}
}

func TestWrapConnSlowSecondHead(t *testing.T) {
	lim := testLimits
	lim.HeaderTimeout = 300 * time.Millisecond
	ts := startServer(t, lim, nil)
	c := dial(t, ts.addr)
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first response = %v, %v; want 200", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	io.WriteString(c, "GET /2 HTTP/1.1\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("second response: %v", err)
	}
	if resp.StatusCode != 408 {
		t.Errorf("second status = %d, want 408", resp.StatusCode)
	}
}

func TestWrapConnSlowBody(t *testing.T) {
	lim := testLimits
	lim.BodyTimeout = 200 * time.Millisecond
	ts := startServer(t, lim, nil)
	c := dial(t, ts.addr)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	if resp.StatusCode != 408 {
		t.Errorf("status = %d, want 408", resp.StatusCode)
	}
	if rej := <-ts.rejections; rej.Reason != ReasonBodyTimeout {
		t.Errorf("reason = %q, want %q", rej.Reason, ReasonBodyTimeout)
	}
}

// TestWrapConnIdleKeepAlive checks that a quiet keep-alive connection gets
// no 408, because between requests only the server's idle timeout runs.
func TestWrapConnIdleKeepAlive(t *testing.T) {
	lim := testLimits
	lim.HeaderTimeout = 100 * time.Millisecond
	ts := startServer(t, lim, nil)
	c := dial(t, ts.addr)
	br := bufio.NewReader(c)
	for i := range 2 {
		io.WriteString(c, "GET /k HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("response %d = %v, %v; want 200", i, resp, err)
		}
		io.Copy(io.Discard, resp.Body)
		time.Sleep(300 * time.Millisecond)
	}
}

// upgradeHandler switches protocols on /ws and then echoes raw bytes; any
// other path is a normal response.
func upgradeHandler(rec *recorder) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ws" {
			rec.ServeHTTP(w, r)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw)
	})
}

func TestWrapConnUpgradePassthrough(t *testing.T) {
	rec := &recorder{}
	ts := startServer(t, testLimits, upgradeHandler(rec))
	c := dial(t, ts.addr)
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade response = %v, %v; want 101", resp, err)
	}
	// Bytes that would be rejected as HTTP must pass unchanged now.
	payload := "not http\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\x00\x01"
	io.WriteString(c, payload)
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(br, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if string(got) != payload {
		t.Errorf("echo = %q, want %q", got, payload)
	}
}

func TestWrapConnUpgradeDeclined(t *testing.T) {
	rec := &recorder{}
	ts := startServer(t, testLimits, upgradeHandler(rec))
	c := dial(t, ts.addr)
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /plain HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first response = %v, %v; want 200", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	io.WriteString(c, "GET /next HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("second response: %v", err)
	}
	if resp.StatusCode != 400 {
		t.Errorf("request after a declined upgrade: status %d, want 400", resp.StatusCode)
	}
	if n := rec.hits.Load(); n != 1 {
		t.Errorf("backend saw %d requests, want 1", n)
	}
}

// TestWrapConnConcurrentClients runs a bounded load of keep-alive clients
// with mixed bodies through the wrapper and checks that every valid request
// gets its response and none is rejected.
func TestWrapConnConcurrentClients(t *testing.T) {
	const clients, perClient = 20, 25
	ts := startServer(t, testLimits, nil)
	tr := &http.Transport{MaxIdleConnsPerHost: clients}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			for j := range perClient {
				body := strings.Repeat("x", (i*perClient+j)%90)
				var resp *http.Response
				var err error
				if j%2 == 0 {
					resp, err = client.Post("http://"+ts.addr+"/p", "text/plain", strings.NewReader(body))
				} else {
					// An io.Reader of unknown length makes the client send chunked.
					resp, err = client.Post("http://"+ts.addr+"/c", "text/plain", io.MultiReader(strings.NewReader(body)))
				}
				if err != nil {
					t.Errorf("client %d request %d: %v", i, j, err)
					return
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				path := map[bool]string{true: "/p", false: "/c"}[j%2 == 0]
				if want := fmt.Sprintf("got POST %s len=%d", path, len(body)); string(got) != want {
					t.Errorf("client %d request %d: body %q, want %q", i, j, got, want)
				}
			}
		})
	}
	wg.Wait()
	select {
	case rej := <-ts.rejections:
		t.Errorf("valid traffic was rejected: %+v", rej)
	default:
	}
	if n := ts.rec.hits.Load(); n != clients*perClient {
		t.Errorf("backend saw %d requests, want %d", n, clients*perClient)
	}
}

func TestWrapConnRejectAfterHalfClose(t *testing.T) {
	ts := startServer(t, testLimits, nil)
	c := dial(t, ts.addr)
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\nHost: a\r\n\r\n")
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	br := bufio.NewReader(c)
	for _, want := range []int{200, 400} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("read response: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != want {
			t.Errorf("status = %d, want %d", resp.StatusCode, want)
		}
	}
	if n := ts.rec.hits.Load(); n != 1 {
		t.Errorf("backend saw %d requests, want 1", n)
	}
}

// TestWrapConnSmallReadBuffers reads a pipelined pair of requests, one
// with a chunked body, through buffers of 1, 7 and 4096 bytes: the
// wrapper reads into the caller's buffer, so every size must give back the
// same validated bytes, and an empty buffer must return at once.
func TestWrapConnSmallReadBuffers(t *testing.T) {
	const raw = "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" +
		"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, size := range []int{1, 7, 4096} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			c := WrapConn(server, Limits{}, nil)
			defer c.Close()
			go func() {
				_, _ = io.WriteString(client, raw)
			}()

			if n, err := c.Read(nil); n != 0 || err != nil {
				t.Fatalf("Read(nil) = %d, %v, want 0, nil", n, err)
			}
			var got []byte
			buf := make([]byte, size)
			for len(got) < len(raw) {
				n, err := c.Read(buf)
				if err != nil {
					t.Fatalf("Read after %d bytes: %v", len(got), err)
				}
				got = append(got, buf[:n]...)
			}
			if string(got) != raw {
				t.Errorf("read %q, want %q", got, raw)
			}
		})
	}
}

// deadlineCounter counts the read deadlines set on a connection.
type deadlineCounter struct {
	net.Conn
	sets int
}

func (c *deadlineCounter) SetReadDeadline(t time.Time) error {
	c.sets++
	return c.Conn.SetReadDeadline(t)
}

// TestWrapConnSkipsUnchangedDeadline checks that a read deadline equal to
// the one set last is not set again, and that every change still reaches
// the wrapped connection and ends a read.
func TestWrapConnSkipsUnchangedDeadline(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	counter := &deadlineCounter{Conn: server}
	c := WrapConn(counter, Limits{}, nil)
	defer c.Close()

	soon := time.Now().Add(50 * time.Millisecond)
	for range 3 {
		if err := c.SetReadDeadline(soon); err != nil {
			t.Fatal(err)
		}
	}
	if counter.sets != 1 {
		t.Errorf("three equal deadlines made %d sets, want 1", counter.sets)
	}
	buf := make([]byte, 16)
	if _, err := c.Read(buf); !isTimeout(err) {
		t.Fatalf("read after the deadline passed: %v, want a timeout", err)
	}

	// Clearing the deadline lets the next request through.
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	head := "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
	go io.WriteString(client, head)
	for got := 0; got < len(head); {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read with no deadline: %v after %d bytes", err, got)
		}
		got += n
	}

	// A deadline in the past after the cleared one ends a blocked read.
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(buf)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := c.SetReadDeadline(time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !isTimeout(err) {
			t.Errorf("blocked read ended with %v, want a timeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a deadline in the past did not end the blocked read")
	}
}
