package l7

import (
	"bufio"
	"bytes"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestParseFastRequest(t *testing.T) {
	cases := []struct {
		head string
		ok   bool
	}{
		{"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", true},
		{"HEAD /x?y=1 HTTP/1.1\r\nHost: a.test:8080\r\nAccept: */*\r\n\r\n", true},
		{"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: keep-alive, close\r\n\r\n", true},
		{"POST / HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"get / HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"GET / HTTP/1.0\r\nHost: a\r\n\r\n", false},
		{"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"GET * HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"GET /a%2fb HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"GET /a|b HTTP/1.1\r\nHost: a\r\n\r\n", false},
		{"GET / HTTP/1.1\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: \r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Secret\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n", false},
		{"GET / HTTP/1.1\nHost: a\n\n", false},
		{"GET / HTTP/1.1\r\nHost : a\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", false},
		{"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", false},
	}
	for _, tc := range cases {
		var req h1Request
		if got := parseFastRequest([]byte(tc.head), &req); got != tc.ok {
			t.Errorf("parseFastRequest(%q) = %v, want %v", tc.head, got, tc.ok)
		}
	}
}

func TestParseFastRequestFields(t *testing.T) {
	head := "GET /p?q HTTP/1.1\r\nHost: A.test\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Prefix: /x\r\n" +
		"Keep-Alive: 5\r\nX-Request-Id: abc\r\nAccept:  text/html \r\nConnection: close\r\n\r\n"
	var req h1Request
	if !parseFastRequest([]byte(head), &req) {
		t.Fatal("not accepted")
	}
	if string(req.path) != "/p" || string(req.target) != "/p?q" || string(req.host) != "A.test" || !req.close || string(req.requestID) != "abc" {
		t.Errorf("got path %q target %q host %q close %v id %q", req.path, req.target, req.host, req.close, req.requestID)
	}
	var kept []string
	for _, f := range req.fields {
		if !f.drop {
			kept = append(kept, string(f.name)+"="+string(f.value))
		}
	}
	if got := strings.Join(kept, ","); got != "Host=A.test,Accept=text/html" {
		t.Errorf("forwarded fields = %s", got)
	}
	if got := req.values("Accept"); len(got) != 1 || got[0] != "text/html" {
		t.Errorf("values(Accept) = %q", got)
	}
}

func TestParseResponse(t *testing.T) {
	cases := []struct {
		head    string
		status  int
		length  int64
		chunked bool
		close   bool
		err     bool
	}{
		{head: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", status: 200, length: 5},
		{head: "HTTP/1.1 200\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", status: 200, length: 5},
		{head: "HTTP/1.1 204 No Content\r\n\r\n", status: 204, length: -1},
		{head: "HTTP/1.0 200 OK\r\n\r\n", status: 200, length: -1, close: true},
		{head: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", status: 200, length: 1},
		{head: "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", status: 200, length: -1, close: true},
		{head: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n", status: 200, length: -1, chunked: true},
		{head: "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n", status: 200, length: 9, close: true},
		{head: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", err: true},
		{head: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", err: true},
		{head: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", err: true},
		{head: "HTTP/1.1 200 OK\nContent-Length: 1\n\n", status: 200, length: 1},
		{head: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", err: true},
		{head: "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n", err: true},
		{head: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", err: true},
		{head: "HTTP/1.1 600 OK\r\n\r\n", err: true},
		{head: "HTTP/2 200 OK\r\n\r\n", err: true},
		{head: "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", err: true},
		{head: "HTTP/1.1 200 OK\r\nBad Name: a\r\n\r\n", err: true},
		{head: "HTTP/1.1 200 OK\r\nX: a\x01\r\n\r\n", err: true},
		{head: "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", err: true},
		{head: "HTTP/1.1 200OK\r\n\r\n", err: true},
		// Whitespace before the colon is removed from an ordinary field,
		// and a framing or hop-by-hop field written that way is rejected.
		{head: "HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 1\r\n\r\n", status: 200, length: 1},
		{head: "HTTP/1.1 200 OK\r\nX-A\t: 1\r\n\r\n", status: 200, length: -1},
		{head: "HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\n", err: true},
		{head: "HTTP/1.1 200 OK\r\nTransfer-Encoding : chunked\r\n\r\n", err: true},
		{head: "HTTP/1.1 200 OK\r\nConnection : close\r\n\r\n", err: true},
		{head: "HTTP/1.1 200 OK\r\nUpgrade : x\r\n\r\n", err: true},
		{head: "HTTP/1.1 200 OK\r\nTrailer : x\r\n\r\n", err: true},
		{head: "HTTP/1.1 200 OK\r\n : 1\r\n\r\n", err: true},
	}
	for _, tc := range cases {
		var resp h1Response
		err := parseResponse([]byte(tc.head), &resp)
		if tc.err {
			if err == nil {
				t.Errorf("parseResponse(%q) accepted", tc.head)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseResponse(%q): %v", tc.head, err)
			continue
		}
		if resp.status != tc.status || resp.contentLength != tc.length || resp.chunked != tc.chunked || resp.close != tc.close {
			t.Errorf("parseResponse(%q) = status %d length %d chunked %v close %v", tc.head, resp.status, resp.contentLength, resp.chunked, resp.close)
		}
	}
}

func TestParseChunkSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "a": 10, "FF;ext=1": 255, "10 ": 16} {
		if got, err := parseChunkSize([]byte(in)); err != nil || got != want {
			t.Errorf("parseChunkSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "g", "-1", "1234567890abcdef0", "0x10"} {
		if _, err := parseChunkSize([]byte(in)); err == nil {
			t.Errorf("parseChunkSize(%q) accepted", in)
		}
	}
}

// FuzzParseFastRequest checks that the request filter never panics and
// that what it accepts holds what the fast path relies on.
func FuzzParseFastRequest(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add([]byte("HEAD /x?y HTTP/1.1\r\nHost: a:1\r\nConnection: close\r\nX-Request-Id: q\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nX-Forwarded-For: 1\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"))
	f.Fuzz(func(t *testing.T, head []byte) {
		var req h1Request
		if !parseFastRequest(head, &req) {
			return
		}
		if req.method != "GET" && req.method != "HEAD" {
			t.Fatalf("accepted method %q", req.method)
		}
		if len(req.target) == 0 || req.target[0] != '/' || !bytes.HasPrefix(req.target, req.path) {
			t.Fatalf("accepted target %q with path %q", req.target, req.path)
		}
		if len(req.host) == 0 || !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
			t.Fatalf("accepted %q", head)
		}
		for _, field := range req.fields {
			if field.drop {
				continue
			}
			for _, c := range append(append([]byte{}, field.name...), field.value...) {
				if c == '\r' || c == '\n' || c == 0 {
					t.Fatalf("forwarded field %q: %q holds a line break or NUL", field.name, field.value)
				}
			}
			switch fieldKind(field.name) {
			case fieldNotFast, fieldContentLength:
				t.Fatalf("accepted field %q", field.name)
			}
		}

		// The header map built for a cache hit matches net/http's
		// for the same head.
		want, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			return
		}
		want.Header["Host"] = []string{want.Host}
		if got := requestHeader(req.fields); !reflect.DeepEqual(got, want.Header) {
			t.Fatalf("head %q: header %q, net/http's %q", head, got, want.Header)
		}
	})
}

// FuzzParseResponse checks that the response parser never panics and keeps
// its framing consistent.
func FuzzParseResponse(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close, X-A\r\nX-A: 1\r\n\r\n"))
	f.Add([]byte("HTTP/1.0 304 Not Modified\nDate: x\n\n"))
	f.Fuzz(func(t *testing.T, head []byte) {
		var resp h1Response
		if err := parseResponse(head, &resp); err != nil {
			return
		}
		if resp.status < 100 || resp.status > 599 {
			t.Fatalf("status %d", resp.status)
		}
		if resp.chunked && resp.contentLength >= 0 {
			t.Fatal("chunked with a content length")
		}
		for _, f := range resp.fields {
			if bytes.ContainsAny(f.value, "\r\n\x00") || bytes.ContainsAny(f.name, "\r\n :") {
				t.Fatalf("field %q: %q", f.name, f.value)
			}
		}
	})
}

func FuzzParseChunkSize(f *testing.F) {
	f.Add([]byte("1f;a=b"))
	f.Fuzz(func(t *testing.T, line []byte) {
		if n, err := parseChunkSize(line); err == nil && n < 0 {
			t.Fatalf("negative size %d from %q", n, line)
		}
	})
}

// TestRequestHeaderMatchesNetHTTP builds the header map of parsed heads
// and compares it with net/http's, which handlers get on the general
// path, with names in any case and repeated.
func TestRequestHeaderMatchesNetHTTP(t *testing.T) {
	heads := []string{
		"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
		"GET /x?y=1 HTTP/1.1\r\nHost: a.test\r\nUser-Agent: ua\r\nAccept: */*\r\n\r\n",
		"GET / HTTP/1.1\r\nhost: a.test\r\naccept: a\r\nAccept: b\r\nx-custom-field: c\r\nCOOKIE: k=1\r\nCookie: k=2\r\n\r\n",
		"HEAD / HTTP/1.1\r\nHost: a.test\r\nX-Empty:\r\nIf-None-Match: \"v1\"\r\n\r\n",
	}
	for _, head := range heads {
		var req h1Request
		if !parseFastRequest([]byte(head), &req) {
			t.Fatalf("parseFastRequest(%q) = false", head)
		}
		got := requestHeader(req.fields)
		want, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
		if err != nil {
			t.Fatal(err)
		}
		// net/http moves Host out of the map, and the fast path keeps it.
		want.Header["Host"] = []string{want.Host}
		if !reflect.DeepEqual(got, want.Header) {
			t.Errorf("head %q:\ngot  %q\nwant %q", head, got, want.Header)
		}
	}
}
