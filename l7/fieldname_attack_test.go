package l7

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// fieldNameAttackConfig serves one backend on the fast path, the general
// path over HTTP/1.1 and the general path over HTTP/2 with TLS.
const fieldNameAttackConfig = `
  access_log: {path: "off"}
  listeners:
    - name: fast
      address: 127.0.0.1:0
    - name: general
      address: 127.0.0.2:0
      fast_path: false
    - name: tls
      address: 127.0.0.3:0
      tls: {certificates: [{cert_file: %q, key_file: %q}]}
  routes:
    - name: all
      match: {path_prefix: /}
      upstream: web
  upstreams:
    - name: web
      backends: [{address: %q}]
`

// fieldNameResult is what a client saw of one exchange: the fields of the
// 1xx responses before the final one, the final status, body and trailer
// fields, and whether the body ended cleanly.
type fieldNameResult struct {
	interim  []http.Header
	status   int
	body     string
	trailer  http.Header
	complete bool
}

// TestBackendFieldNameSpaceInterimAndTrailer has the backend put spaces
// between a field name and its colon in a 1xx response and in a chunked
// trailer, and send statuses outside 100..599 and a 100 with a body.
// Every listener must forward the 1xx and trailer fields with the space
// removed (RFC 9112 section 5.1). It must respond with 502 to a 1xx whose
// Connection field is written that way, as to such a final response, and
// to the bad statuses. Pools that use direct connections and pools that
// use the transport are both tried.
func TestBackendFieldNameSpaceInterimAndTrailer(t *testing.T) {
	responses := map[string]string{
		"/hint":       "HTTP/1.1 103 Early Hints\r\nLink  : </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/hint-conn":  "HTTP/1.1 103 Early Hints\r\nConnection : close\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"/trailer":    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n2\r\nok\r\n0\r\nX-T : 1\r\n\r\n",
		"/status-000": "HTTP/1.1 000 Zero\r\nContent-Length: 2\r\n\r\nok",
		"/status-099": "HTTP/1.1 099 Low\r\nContent-Length: 2\r\n\r\nok",
		"/status-999": "HTTP/1.1 999 High\r\nContent-Length: 2\r\n\r\nok",
		"/status-100": "HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	}
	addr := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		for {
			line := readRequestHead(r)
			if line == "" {
				return
			}
			path := strings.Fields(line)[1]
			if _, err := io.WriteString(c, responses[path]); err != nil || strings.HasPrefix(path, "/status") {
				return
			}
		}
	})
	cert := writeCert(t, t.TempDir(), "a", "a.test")
	want := map[string]fieldNameResult{
		"/hint":       {interim: []http.Header{{"Link": {"</a>"}}}, status: 200, body: "ok", complete: true},
		"/hint-conn":  {status: 502, body: "Bad Gateway\n", complete: true},
		"/trailer":    {status: 200, body: "ok", trailer: http.Header{"X-T": {"1"}}, complete: true},
		"/status-000": {status: 502, body: "Bad Gateway\n", complete: true},
		"/status-099": {status: 502, body: "Bad Gateway\n", complete: true},
		"/status-999": {status: 502, body: "Bad Gateway\n", complete: true},
		// A 1xx has no body (RFC 9110 section 15.2), so the bytes after
		// the 100 are a malformed head.
		"/status-100": {interim: []http.Header{{}}, status: 502, body: "Bad Gateway\n", complete: true},
	}
	for _, via := range []string{"direct", "transport"} {
		_, addrs := startL7(t, fmt.Sprintf(fieldNameAttackConfig, cert.CertFile, cert.KeyFile, addr), pathOptions(via)...)
		h2 := &http.Client{Transport: &http2.Transport{
			// #nosec G402 -- the test certificate is self-signed.
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: "a.test"},
		}}
		for path, w := range want {
			for _, listener := range []string{"fast", "general", "tls"} {
				var got fieldNameResult
				if listener == "tls" {
					got = fieldNameOverH2(t, h2, "https://"+addrs[listener]+path)
				} else {
					got = fieldNameOverH1(t, addrs[listener], path)
				}
				if g, w := fmt.Sprint(got), fmt.Sprint(w); g != w {
					t.Errorf("%s on %s via %s: got %s, want %s", path, listener, via, g, w)
				}
			}
		}
		h2.CloseIdleConnections()
	}
}

// fieldNameOverH1 sends GET path on a new connection and reads the 1xx
// responses and the final one.
func fieldNameOverH1(t *testing.T, addr, path string) fieldNameResult {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: a.test\r\n\r\n")
	r := bufio.NewReader(c)
	var res fieldNameResult
	for {
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("GET %s on %s: %v", path, addr, err)
		}
		if resp.StatusCode < 200 {
			res.interim = append(res.interim, withoutRequestID(resp.Header))
			continue
		}
		body, err := io.ReadAll(resp.Body)
		res.status, res.body, res.complete = resp.StatusCode, string(body), err == nil
		if len(resp.Trailer) > 0 {
			res.trailer = resp.Trailer
		}
		return res
	}
}

// fieldNameOverH2 sends GET url over HTTP/2 and records the 1xx responses
// through the client trace.
func fieldNameOverH2(t *testing.T, client *http.Client, url string) fieldNameResult {
	t.Helper()
	var res fieldNameResult
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			res.interim = append(res.interim, withoutRequestID(http.Header(h).Clone()))
			return nil
		},
	})
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	res.status, res.body, res.complete = resp.StatusCode, string(body), err == nil
	if len(resp.Trailer) > 0 {
		res.trailer = resp.Trailer
	}
	return res
}

// withoutRequestID drops the request ID, which the general path adds to
// 1xx responses and the fast path does not.
func withoutRequestID(h http.Header) http.Header {
	delete(h, "X-Request-Id")
	return h
}

// TestCachedRouteFieldNameSpace has a backend on a cached route write
// Cache-Control and a custom field with a space before the colon. The
// cache must store the response by the trimmed Cache-Control, so the
// second and third requests are hits, and every response, stored or not,
// must carry the names without the space.
func TestCachedRouteFieldNameSpace(t *testing.T) {
	var hits atomic.Int32
	addr := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		for readRequestHead(r) != "" {
			hits.Add(1)
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nCache-Control : public, max-age=3600\r\nX-Odd  : 1\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	s := startCachedL7(t, fmt.Sprintf(twoListeners, addr))
	addrs := s.Addrs()
	for i, listener := range []string{"fast", "fast", "general"} {
		got := fieldNameOverH1(t, addrs[listener].String(), "/c")
		if got.status != 200 || got.body != "ok" {
			t.Errorf("request %d on %s: %d %q, want 200 \"ok\"", i, listener, got.status, got.body)
		}
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("backend got %d requests, want 1 and two cache hits", n)
	}
	for _, listener := range []string{"fast", "general"} {
		c, err := net.Dial("tcp", addrs[listener].String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.WriteString(c, "GET /c HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
		raw, _ := io.ReadAll(c)
		c.Close()
		for _, want := range []string{"\r\nCache-Control: public, max-age=3600\r\n", "\r\nX-Odd: 1\r\n"} {
			if !strings.Contains(string(raw), want) {
				t.Errorf("hit on %s lacks %q:\n%s", listener, want, raw)
			}
		}
	}
}
