package upstream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidegate/tidegate/shared/config"
)

func TestHeadEnd(t *testing.T) {
	cases := map[string]int{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody": 27,
		"HTTP/1.1 200 OK\n\nbody":               17,
		"GET / HTTP/1.1\r\nHost: a\r\n":         -1,
		"":                                      -1,
		"\r\n":                                  -1,
		"\n\n":                                  2,
	}
	for in, want := range cases {
		if got := HeadEnd([]byte(in)); got != want {
			t.Errorf("HeadEnd(%q) = %d, want %d", in, got, want)
		}
	}
}

// scriptedBackend serves raw HTTP/1.1 on 127.0.0.1. For each request head
// it reads, respond returns the bytes to send and whether to close the
// connection afterwards. It records the parsed requests and counts the
// connections it accepted.
type scriptedBackend struct {
	addr     string
	accepted atomic.Int32
	mu       sync.Mutex
	requests []*http.Request
}

func newScriptedBackend(t *testing.T, respond func(req *http.Request, n int) (string, bool)) *scriptedBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &scriptedBackend{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for n := 0; ; n++ {
					req, err := http.ReadRequest(r)
					if err != nil {
						return
					}
					s.mu.Lock()
					s.requests = append(s.requests, req)
					s.mu.Unlock()
					out, closeConn := respond(req, n)
					if _, err := io.WriteString(c, out); err != nil || closeConn {
						return
					}
				}
			}()
		}
	}()
	return s
}

func (s *scriptedBackend) last() *http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[len(s.requests)-1]
}

const okResponse = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

func roundTripBody(t *testing.T, p *Pool, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := p.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: body: %v", req.Method, req.URL, err)
	}
	return resp, string(body)
}

// TestExchangeSendsWhatTheTransportSends forwards the same requests once
// on direct connections and once through net/http's transport, and
// compares what the backend received.
func TestExchangeSendsWhatTheTransportSends(t *testing.T) {
	backend := newScriptedBackend(t, func(req *http.Request, _ int) (string, bool) {
		if req.Method == "HEAD" {
			return strings.TrimSuffix(okResponse, "ok"), false
		}
		return okResponse, false
	})
	cfg := config.Upstream{Backends: []config.Backend{{Address: backend.addr}}, MaxIdlePerBackend: 4}
	direct := testPool(t, cfg)
	// A transport that is not an *http.Transport turns the direct path
	// off.
	viaTransport := testPool(t, cfg, WithTransport(struct{ http.RoundTripper }{direct.newTransport()}))
	if !direct.directOK || viaTransport.directOK {
		t.Fatalf("directOK = %v and %v, want true and false", direct.directOK, viaTransport.directOK)
	}

	requests := []func() *http.Request{
		func() *http.Request {
			r := httptest.NewRequest("GET", "http://front.test/a/b?q=1&r=%20", nil)
			r.Header = http.Header{"Accept": {"*/*"}, "X-Multi": {"one", " two "}, "X-Forwarded-For": {"192.0.2.1"}}
			return r
		},
		func() *http.Request {
			// ReverseProxy's way of sending no User-Agent.
			r := httptest.NewRequest("HEAD", "http://front.test/", nil)
			r.Header = http.Header{"User-Agent": {""}}
			return r
		},
		func() *http.Request {
			r := httptest.NewRequest("DELETE", "http://front.test/item/7", nil)
			r.Header = http.Header{"User-Agent": {"client/1.0", "second"}}
			return r
		},
		func() *http.Request {
			r := httptest.NewRequest("POST", "http://front.test/form", nil)
			r.ContentLength = 0
			return r
		},
		func() *http.Request {
			r := httptest.NewRequest("OPTIONS", "http://front.test/", nil)
			r.Host = "other.test:8080"
			return r
		},
	}
	for _, build := range requests {
		var seen [2]*http.Request
		for i, p := range []*Pool{direct, viaTransport} {
			req := build()
			req.RequestURI = ""
			req.Body = nil
			roundTripBody(t, p, req)
			seen[i] = backend.last()
		}
		d, tr := seen[0], seen[1]
		if d.Method != tr.Method || d.RequestURI != tr.RequestURI || d.Host != tr.Host || d.ContentLength != tr.ContentLength {
			t.Errorf("direct sent %s %s Host %s length %d; transport sent %s %s Host %s length %d",
				d.Method, d.RequestURI, d.Host, d.ContentLength, tr.Method, tr.RequestURI, tr.Host, tr.ContentLength)
		}
		if !reflect.DeepEqual(d.Header, tr.Header) {
			t.Errorf("%s %s: direct sent header %v, transport sent %v", d.Method, d.RequestURI, d.Header, tr.Header)
		}
	}
	if got := backend.accepted.Load(); got != 2 {
		t.Errorf("backend accepted %d connections, want one per pool", got)
	}
}

func TestExchangeRefusesInvalidFields(t *testing.T) {
	backend := newScriptedBackend(t, func(*http.Request, int) (string, bool) { return okResponse, false })
	p := testPool(t, config.Upstream{Backends: []config.Backend{{Address: backend.addr}}})
	for name, edit := range map[string]func(*http.Request){
		"value with a line feed": func(r *http.Request) { r.Header.Set("X-Bad", "a\nInjected: yes") },
		"name with a space":      func(r *http.Request) { r.Header["Bad Name"] = []string{"v"} },
		"host with a space":      func(r *http.Request) { r.Host = "a b" },
	} {
		req := httptest.NewRequest("GET", "http://front.test/", nil)
		req.RequestURI = ""
		edit(req)
		if _, err := p.RoundTrip(req); err == nil {
			t.Errorf("%s: RoundTrip succeeded, want an error", name)
		}
	}
	if got := backend.accepted.Load(); got != 0 {
		t.Errorf("backend accepted %d connections for invalid requests, want 0", got)
	}
}

// TestExchangeResponses reads responses of every framing and checks which
// connections go back to the pool.
func TestExchangeResponses(t *testing.T) {
	responses := map[string]string{
		"/length":  okResponse,
		"/chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Trailer: t\r\n\r\n",
		"/empty":   "HTTP/1.1 204 No Content\r\n\r\n",
		"/bare-lf": "HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
		"/close":   "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
		"/eof":     "HTTP/1.1 200 OK\r\n\r\nok",
		"/http10":  "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
	}
	cases := []struct {
		method, path, body string
		status             int
		kept               bool
	}{
		{"GET", "/length", "ok", 200, true},
		{"GET", "/chunked", "ok", 200, true},
		{"GET", "/empty", "", 204, true},
		{"HEAD", "/length", "", 200, true},
		{"GET", "/bare-lf", "ok", 200, true},
		{"GET", "/close", "ok", 200, false},
		{"GET", "/eof", "ok", 200, false},
		{"GET", "/http10", "ok", 200, false},
	}
	for _, tc := range cases {
		backend := newScriptedBackend(t, func(req *http.Request, _ int) (string, bool) {
			out := responses[req.URL.Path]
			if req.Method == "HEAD" {
				out = strings.TrimSuffix(out, "ok")
			}
			return out, strings.Contains(req.URL.Path, "eof") || strings.Contains(req.URL.Path, "close") || strings.Contains(req.URL.Path, "http10")
		})
		p := testPool(t, config.Upstream{Backends: []config.Backend{{Address: backend.addr}}, MaxIdlePerBackend: 4})
		for range 2 {
			req := httptest.NewRequest(tc.method, "http://front.test"+tc.path, nil)
			req.RequestURI = ""
			resp, body := roundTripBody(t, p, req)
			if resp.StatusCode != tc.status || body != tc.body {
				t.Errorf("%s %s: got %d %q, want %d %q", tc.method, tc.path, resp.StatusCode, body, tc.status, tc.body)
			}
			if tc.path == "/chunked" && resp.Trailer.Get("X-Trailer") != "t" {
				t.Errorf("chunked response trailer = %v", resp.Trailer)
			}
		}
		want := int32(2)
		if tc.kept {
			want = 1
		}
		if got := backend.accepted.Load(); got != want {
			t.Errorf("%s %s: backend accepted %d connections for two requests, want %d", tc.method, tc.path, got, want)
		}
	}
}

// TestExchangeStaleConnection has the backend close a reused connection
// when it reads the next request, without a response. The request goes
// again on a new connection.
func TestExchangeStaleConnection(t *testing.T) {
	backend := newScriptedBackend(t, func(_ *http.Request, n int) (string, bool) {
		if n == 1 {
			return "", true
		}
		return okResponse, false
	})
	p := testPool(t, config.Upstream{Backends: []config.Backend{{Address: backend.addr}}, MaxIdlePerBackend: 4})
	for i := range 2 {
		req := httptest.NewRequest("GET", "http://front.test/", nil)
		req.RequestURI = ""
		if _, body := roundTripBody(t, p, req); body != "ok" {
			t.Fatalf("request %d: body %q", i, body)
		}
	}
	if got := backend.accepted.Load(); got != 2 {
		t.Errorf("backend accepted %d connections, want 2", got)
	}
}

// TestExchangeEarlyClose closes a body before its end: the connection,
// with the rest of the body unread, must not serve another request.
func TestExchangeEarlyClose(t *testing.T) {
	big := strings.Repeat("x", 64<<10)
	backend := newScriptedBackend(t, func(*http.Request, int) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n" + big, false
	})
	p := testPool(t, config.Upstream{Backends: []config.Backend{{Address: backend.addr}}, MaxIdlePerBackend: 4})
	req := httptest.NewRequest("GET", "http://front.test/", nil)
	req.RequestURI = ""
	resp, err := p.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	req = httptest.NewRequest("GET", "http://front.test/", nil)
	req.RequestURI = ""
	if _, body := roundTripBody(t, p, req); body != big {
		t.Fatalf("second response body has %d bytes, want %d", len(body), len(big))
	}
	if got := backend.accepted.Load(); got != 2 {
		t.Errorf("backend accepted %d connections, want 2", got)
	}
	if got := p.Stats()[0].InFlight; got != 0 {
		t.Errorf("in flight after both bodies closed = %d, want 0", got)
	}
}

func TestExchangeInformational(t *testing.T) {
	backend := newScriptedBackend(t, func(*http.Request, int) (string, bool) {
		return "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" + okResponse, false
	})
	p := testPool(t, config.Upstream{Backends: []config.Backend{{Address: backend.addr}}})
	var got []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		got = append(got, strconv.Itoa(code)+" "+h.Get("Link"))
		return nil
	}}
	req := httptest.NewRequest("GET", "http://front.test/", nil)
	req.RequestURI = ""
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	resp, body := roundTripBody(t, p, req)
	if resp.StatusCode != 200 || body != "ok" {
		t.Errorf("final response %d %q", resp.StatusCode, body)
	}
	if want := []string{"103 </s.css>; rel=preload"}; !reflect.DeepEqual(got, want) {
		t.Errorf("1xx responses seen = %q, want %q", got, want)
	}
}

func TestExchangeBadResponses(t *testing.T) {
	responses := map[string]string{
		"/switch":  "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
		"/garbage": "NOT HTTP\r\n\r\n",
		"/cut":     "HTTP/1.1 200 OK\r\nContent-Le",
	}
	backend := newScriptedBackend(t, func(req *http.Request, _ int) (string, bool) {
		return responses[req.URL.Path], true
	})
	p := testPool(t, config.Upstream{Backends: []config.Backend{{Address: backend.addr}}})
	for path := range responses {
		req := httptest.NewRequest("GET", "http://front.test"+path, nil)
		req.RequestURI = ""
		if resp, err := p.RoundTrip(req); err == nil {
			resp.Body.Close()
			t.Errorf("%s: got %d, want an error", path, resp.StatusCode)
		}
	}
	if got := p.Stats()[0].Conns; got != 0 {
		t.Errorf("open connections after failed exchanges = %d, want 0", got)
	}
}

// TestExchangeClientGone cancels the request before the backend has sent
// a response: the wait ends with the context's error and the connection is
// closed.
func TestExchangeClientGone(t *testing.T) {
	backend := newScriptedBackend(t, func(*http.Request, int) (string, bool) {
		time.Sleep(10 * time.Second)
		return okResponse, false
	})
	p := testPool(t, config.Upstream{Backends: []config.Backend{{Address: backend.addr}}})
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequest("GET", "http://front.test/", nil).WithContext(ctx)
	req.RequestURI = ""
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := p.RoundTrip(req)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("RoundTrip after cancel = %v, want context.Canceled", err)
	}
	if got := p.Stats()[0].Conns; got != 0 {
		t.Errorf("open connections after cancel = %d, want 0", got)
	}
}

// FuzzAppendRequestHead writes heads from arbitrary targets and fields.
// Either the writer rejects them, or the head parses back to the same
// request, so no value can smuggle a field or a second request.
func FuzzAppendRequestHead(f *testing.F) {
	f.Add("/a?b=c", "front.test", "X-A", "1", "ua")
	f.Add("/", "h", "X-A", "a\r\nX-Injected: 1", "")
	f.Add("*", "h:80", "Bad Name", "v", "\x00")
	f.Fuzz(func(t *testing.T, target, host, name, value, agent string) {
		req := httptest.NewRequest("GET", "http://front.test/", nil)
		req.RequestURI = ""
		// The proxy forwards origin-form targets, and "*" for OPTIONS,
		// on URLs naming the backend.
		u, err := url.ParseRequestURI(target)
		if err != nil || u.Scheme != "" || u.Opaque != "" {
			return
		}
		u.Scheme, u.Host = "http", "backend.test"
		req.URL = u
		req.Host = host
		req.Header = http.Header{name: {value}, "User-Agent": {agent}}
		head, err := appendRequestHead(nil, req)
		if err != nil {
			return
		}
		got, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("head %q does not parse: %v", head, err)
		}
		wantHost := host
		if wantHost == "" {
			wantHost = u.Host
		}
		if got.Host != wantHost {
			t.Errorf("Host %q, want %q", got.Host, wantHost)
		}
		if got.RequestURI != u.RequestURI() {
			t.Errorf("target %q, want %q", got.RequestURI, u.RequestURI())
		}
		if name != "Host" && name != "User-Agent" && name != "Content-Length" && name != "Transfer-Encoding" && name != "Trailer" {
			if v := got.Header.Values(name); len(v) != 1 || v[0] != textproto.TrimString(value) {
				t.Errorf("field %q = %q, want %q", name, v, value)
			}
		}
		// The request line, Host, User-Agent when not empty before
		// trimming, as the transport writes it, and the one field:
		// nothing else.
		want := 1
		if agent != "" {
			want++
		}
		if n := bytes.Count(head, []byte("\r\n")); n-3 > want {
			t.Errorf("head %q has %d field lines, want at most %d", head, n-3, want)
		}
	})
}

// TestDialCanceledIsNotConnectError dials for a request that has ended.
// The failure must not count as the backend's, or clients that reset
// their requests could eject a healthy backend.
func TestDialCanceledIsNotConnectError(t *testing.T) {
	backend := newScriptedBackend(t, func(*http.Request, int) (string, bool) { return okResponse, false })
	p := testPool(t, config.Upstream{
		Backends: []config.Backend{{Address: backend.addr}},
		Outlier:  config.Outlier{ConsecutiveFailures: 2, Cooldown: config.Duration(time.Minute)},
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := p.dial(ctx, &net.Dialer{}, "tcp", backend.addr)
	if err == nil {
		t.Fatal("dial with a canceled context succeeded")
	}
	if IsConnectError(err) {
		t.Errorf("dial with a canceled context = %v, a connect error", err)
	}

	for range 5 {
		req := httptest.NewRequest("GET", "http://front.test/", nil).WithContext(ctx)
		req.RequestURI = ""
		if _, err := p.RoundTrip(req); !errors.Is(err, context.Canceled) {
			t.Errorf("RoundTrip with a canceled context = %v, want context.Canceled", err)
		}
	}
	if st := p.Stats()[0]; st.Ejected {
		t.Error("backend ejected after requests that the client canceled")
	}
}

// TestExchangeHashPool checks that a hash-balanced pool sends bodiless
// requests on direct connections, because it picks the backend from the
// request first. The fast path picks without the request, so it may not
// use the pool. WithoutDirect keeps every request on the transport.
func TestExchangeHashPool(t *testing.T) {
	backend := newScriptedBackend(t, func(*http.Request, int) (string, bool) { return okResponse, false })
	cfg := config.Upstream{Balance: "hash", HashKey: "client", Backends: []config.Backend{{Address: backend.addr}}, MaxIdlePerBackend: 4}
	for _, tc := range []struct {
		name       string
		opts       []Option
		directIdle int
	}{
		{"hash", nil, 1},
		{"without direct", []Option{WithoutDirect()}, 0},
	} {
		p := testPool(t, cfg, tc.opts...)
		if p.DirectCapable() {
			t.Errorf("%s: DirectCapable = true for a hash-balanced pool", tc.name)
		}
		req := httptest.NewRequest("GET", "http://front.test/", nil)
		req.RequestURI = ""
		req.RemoteAddr = "192.0.2.1:1234"
		if _, body := roundTripBody(t, p, req); body != "ok" {
			t.Errorf("%s: body %q", tc.name, body)
		}
		p.direct.mu.Lock()
		idle := len(p.direct.conns[p.backends[0]])
		p.direct.mu.Unlock()
		if idle != tc.directIdle {
			t.Errorf("%s: %d idle direct connections after the request, want %d", tc.name, idle, tc.directIdle)
		}
	}
}
