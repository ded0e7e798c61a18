//go:build integration

package integration

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// framingL7 is an L7 with small request limits on one cleartext listener
// in front of backend.
func framingL7(t *testing.T, backend string) *l7Proc {
	t.Helper()
	listen := freeAddr(t)
	return startL7(t, t.TempDir(), fmt.Sprintf(`
listeners:
  - name: edge
    address: %s
    read_header_timeout: 1s
    max_header_bytes: 2KiB
    limits:
      max_request_line: 256
      max_uri_length: 128
      max_header_count: 10
      max_body_bytes: 1KiB
      body_read_timeout: 1s
routes:
  - {name: all, upstream: rec}
upstreams:
  - name: rec
    backends:
      - address: %s
access_log:
  path: "off"
`, listen, backend))
}

func (p *l7Proc) dataAddr(t *testing.T) string {
	t.Helper()
	for _, line := range strings.Split(p.out.String(), "\n") {
		if !strings.Contains(line, "msg=listening") {
			continue
		}
		for _, field := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(field, "address="); ok {
				return v
			}
		}
	}
	t.Fatalf("no listening line in the output of %s", p.name)
	return ""
}

// TestL7PolicyFramingRejected sends each ambiguous framing to the real
// binary over a raw socket and checks the status and that the backend saw
// no connection and no byte.
func TestL7PolicyFramingRejected(t *testing.T) {
	backend := startRecordingBackend(t, "rec")
	l7 := framingL7(t, backend.addr)
	addr := l7.dataAddr(t)

	const head = "POST /upload HTTP/1.1\r\nHost: example.test\r\n"
	tests := []struct {
		name    string
		request string
		want    int
	}{
		{"content-length with chunked", head + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"chunked with content-length", head + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400},
		{"two content-length lines", head + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400},
		{"equal content-length lines", head + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400},
		{"content-length list", head + "Content-Length: 5, 5\r\n\r\nhello", 400},
		{"negative content-length", head + "Content-Length: -5\r\n\r\nhello", 400},
		{"content-length with letters", head + "Content-Length: 5x\r\n\r\nhello", 400},
		{"plus-signed content-length", head + "Content-Length: +5\r\n\r\nhello", 400},
		{"transfer-encoding gzip alone", head + "Transfer-Encoding: gzip\r\n\r\nhello", 400},
		{"chunked then gzip", head + "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400},
		{"chunked twice", head + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"gzip before chunked", head + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
		{"chunk size not hex", head + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400},
		{"chunk size overflow", head + "Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nhello\r\n0\r\n\r\n", 400},
		{"negative chunk size", head + "Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", 400},
		{"chunk size line bare LF", head + "Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400},
		{"chunk size with space", head + "Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", 400},
		{"chunk data too long", head + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello!!\r\n0\r\n\r\n", 400},
		{"bare LF line ends", "GET / HTTP/1.1\nHost: example.test\n\n", 400},
		{"bare LF in one header", "GET / HTTP/1.1\r\nHost: example.test\nX-A: b\r\n\r\n", 400},
		{"obsolete line folding", "GET / HTTP/1.1\r\nHost: example.test\r\nX-Folded: a\r\n b\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost: example.test\r\nX-A : b\r\n\r\n", 400},
		{"tab before colon", "GET / HTTP/1.1\r\nHost: example.test\r\nX-A\t: b\r\n\r\n", 400},
		{"control character in value", "GET / HTTP/1.1\r\nHost: example.test\r\nX-A: b\x01c\r\n\r\n", 400},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: example.test\r\nX-A: b\x00c\r\n\r\n", 400},
		{"DEL in value", "GET / HTTP/1.1\r\nHost: example.test\r\nX-A: b\x7fc\r\n\r\n", 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := rawExchange(t, addr, 0, tc.request)
			if err != nil {
				t.Fatalf("no response to %q: %v", tc.request, err)
			}
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
			if !resp.Close {
				t.Error("rejection does not close the connection")
			}
		})
	}
	if n := backend.conns.Load(); n != 0 {
		t.Errorf("backend accepted %d connections from rejected requests, want 0", n)
	}
	if n := backend.bytes.Load(); n != 0 {
		t.Errorf("backend read %d bytes from rejected requests, want 0", n)
	}

	// The same listener forwards a well-formed request, so the zero counts
	// above come from the rejections and not from a broken route.
	resp, err := rawExchange(t, addr, 0, head+"Content-Length: 5\r\n\r\nhello")
	if err != nil {
		t.Fatalf("valid request: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Errorf("valid request: status %d, want 200", resp.StatusCode)
	}
	if backend.echo.Count() != 1 {
		t.Errorf("backend served %d requests, want 1", backend.echo.Count())
	}
}

// TestL7PolicyRequestLimits checks the listener limits on the real binary.
// A long target or request line gets 414, too many or too large headers
// 431, and a declared or chunked body above max_body_bytes 413. A client
// that stalls in its head or body gets 408.
func TestL7PolicyRequestLimits(t *testing.T) {
	backend := startRecordingBackend(t, "rec")
	l7 := framingL7(t, backend.addr)
	addr := l7.dataAddr(t)

	const host = "Host: example.test\r\n"
	manyHeaders := ""
	for i := range 11 {
		manyHeaders += fmt.Sprintf("X-H%d: v\r\n", i)
	}
	bigHeader := "X-Big: " + strings.Repeat("a", 2100) + "\r\n"
	chunk := fmt.Sprintf("%x\r\n%s\r\n", 400, strings.Repeat("b", 400))

	tests := []struct {
		name  string
		pause time.Duration
		parts []string
		want  int
		// reachesBackend is true when the head is valid and forwarded
		// before the body breaks a limit.
		reachesBackend bool
	}{
		{name: "target above max_uri_length", parts: []string{"GET /" + strings.Repeat("u", 150) + " HTTP/1.1\r\n" + host + "\r\n"}, want: 414},
		{name: "target at max_uri_length", parts: []string{"GET /" + strings.Repeat("u", 127) + " HTTP/1.1\r\n" + host + "\r\n"}, want: 200, reachesBackend: true},
		{name: "request line above max_request_line", parts: []string{strings.Repeat("M", 200) + " /" + strings.Repeat("u", 100) + " HTTP/1.1\r\n" + host + "\r\n"}, want: 414},
		{name: "too many headers", parts: []string{"GET / HTTP/1.1\r\n" + host + manyHeaders + "\r\n"}, want: 431},
		{name: "header bytes above max", parts: []string{"GET / HTTP/1.1\r\n" + host + bigHeader + "\r\n"}, want: 431},
		{name: "declared body above max", parts: []string{"POST / HTTP/1.1\r\n" + host + "Content-Length: 2000\r\n\r\n"}, want: 413},
		{
			name:           "chunked body crosses max mid-stream",
			pause:          100 * time.Millisecond,
			parts:          []string{"POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n", chunk, chunk, chunk, "0\r\n\r\n"},
			want:           413,
			reachesBackend: true,
		},
		{name: "stalled head", parts: []string{"GET / HTTP/1.1\r\n" + host}, want: 408},
		{name: "stalled body", parts: []string{"POST / HTTP/1.1\r\n" + host + "Content-Length: 10\r\n\r\nabc"}, want: 408, reachesBackend: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := backend.conns.Load() + backend.bytes.Load()
			resp, err := rawExchange(t, addr, tc.pause, tc.parts...)
			if err != nil {
				t.Fatalf("no response: %v", err)
			}
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
			after := backend.conns.Load() + backend.bytes.Load()
			if !tc.reachesBackend && after != before {
				t.Errorf("backend saw %d new connections and bytes, want none", after-before)
			}
		})
	}
}

// TestL7PolicyHTTP2BodyLimit checks max_body_bytes on HTTP/2 over TLS,
// which the raw-byte checks of HTTP/1.x never see: a declared body above
// the limit gets 413 without reaching the backend, and a streamed body
// without Content-Length gets 413 once it crosses the limit.
func TestL7PolicyHTTP2BodyLimit(t *testing.T) {
	dir := t.TempDir()
	backend := startRecordingBackend(t, "rec")
	certFile, keyFile, pool := selfSignedCert(t, dir, "", "localhost")
	listen := freeAddr(t)
	startL7(t, dir, fmt.Sprintf(`
listeners:
  - name: tls
    address: %s
    tls:
      certificates: [{cert_file: %s, key_file: %s}]
    limits: {max_body_bytes: 1KiB}
routes:
  - {name: all, upstream: rec}
upstreams:
  - name: rec
    backends:
      - address: %s
access_log:
  path: "off"
`, listen, certFile, keyFile, backend.addr))

	tr := &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	post := func(body io.Reader) *http.Response {
		t.Helper()
		resp, err := client.Post("https://"+listen+"/upload", "application/octet-stream", body)
		if err != nil {
			t.Fatalf("POST: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("response over %s, want HTTP/2", resp.Proto)
		}
		return resp
	}

	if resp := post(strings.NewReader(strings.Repeat("a", 2000))); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("declared 2000-byte body: status %d, want 413", resp.StatusCode)
	}
	if n := backend.conns.Load(); n != 0 {
		t.Errorf("backend accepted %d connections for a declared oversized body, want 0", n)
	}

	// io.MultiReader hides the length, so the client streams the body
	// without Content-Length. The proxy forwards the head and the first
	// KiB before it can tell, so the backend receives a request whose body
	// breaks off.
	streamed := io.MultiReader(strings.NewReader(strings.Repeat("b", 600)), strings.NewReader(strings.Repeat("c", 600)))
	if resp := post(streamed); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("streamed 1200-byte body: status %d, want 413", resp.StatusCode)
	}

	small := io.MultiReader(strings.NewReader(strings.Repeat("d", 500)))
	if resp := post(small); resp.StatusCode != http.StatusOK {
		t.Errorf("streamed 500-byte body: status %d, want 200", resp.StatusCode)
	}
}
