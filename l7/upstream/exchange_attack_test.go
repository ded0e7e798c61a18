package upstream

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"syscall"
	"testing"
	"time"

	"github.com/tidegate/tidegate/shared/config"
)

// TestExchangeStaleReplayOnlyIdempotent has the backend read a request on
// a reused connection and close it without a response. The backend may
// have acted on the request, so only a request that may be replayed goes
// again on a new connection, as with net/http's transport: a POST must
// reach the backend once and fail.
func TestExchangeStaleReplayOnlyIdempotent(t *testing.T) {
	cases := []struct {
		name     string
		method   string
		header   http.Header
		replayed bool
	}{
		{name: "get", method: "GET", replayed: true},
		{name: "options", method: "OPTIONS", replayed: true},
		{name: "post", method: "POST"},
		{name: "delete", method: "DELETE"},
		{name: "post with idempotency key", method: "POST", header: http.Header{"Idempotency-Key": {"k1"}}, replayed: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, via := range []string{"direct", "transport"} {
				backend := newScriptedBackend(t, func(_ *http.Request, n int) (string, bool) {
					if n == 1 {
						return "", true
					}
					return okResponse, false
				})
				cfg := config.Upstream{Backends: []config.Backend{{Address: backend.addr}}, MaxIdlePerBackend: 4}
				p := testPool(t, cfg)
				if via == "transport" {
					p = testPool(t, cfg, WithTransport(struct{ http.RoundTripper }{p.newTransport()}))
				}
				first := httptest.NewRequest("GET", "http://front.test/", nil)
				first.RequestURI = ""
				roundTripBody(t, p, first)

				req := httptest.NewRequest(tc.method, "http://front.test/act", nil)
				req.RequestURI = ""
				req.Body = nil
				for k, v := range tc.header {
					req.Header[k] = v
				}
				resp, err := p.RoundTrip(req)
				if err == nil {
					resp.Body.Close()
				}
				if tc.replayed && err != nil {
					t.Errorf("%s: %s on a stale connection = %v, want a replay and a response", via, tc.method, err)
				}
				if !tc.replayed && err == nil {
					t.Errorf("%s: %s on a stale connection succeeded, want an error and no replay", via, tc.method)
				}

				backend.mu.Lock()
				acts := 0
				for _, r := range backend.requests {
					if r.URL.Path == "/act" {
						acts++
					}
				}
				backend.mu.Unlock()
				want := 1
				if tc.replayed {
					want = 2
				}
				if acts != want {
					t.Errorf("%s: backend received %s /act %d times, want %d", via, tc.method, acts, want)
				}
			}
		})
	}
}

// TestExchangeHostAndMethodLikeTransport forwards requests whose method or
// Host an HTTP/2 client can send but an HTTP/1.1 request line or Host
// field cannot carry as they are. The direct exchange must send what the
// transport sends, or fail where the transport fails, with nothing sent.
func TestExchangeHostAndMethodLikeTransport(t *testing.T) {
	cases := []struct {
		name     string
		method   string
		host     string
		wantHost string
		wantErr  bool
	}{
		{name: "method with a space", method: "GET /admin", host: "a.test", wantErr: true},
		{name: "method with a separator", method: "GE(T", host: "a.test", wantErr: true},
		{name: "international host", method: "GET", host: "bücher.test", wantHost: "xn--bcher-kva.test"},
		{name: "international host and port", method: "GET", host: "bücher.test:8080", wantHost: "xn--bcher-kva.test:8080"},
		{name: "ipv6 zone", method: "GET", host: "[fe80::1%25eth0]:80", wantHost: "[fe80::1]:80"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, via := range []string{"direct", "transport"} {
				backend := newScriptedBackend(t, func(*http.Request, int) (string, bool) { return okResponse, false })
				cfg := config.Upstream{Backends: []config.Backend{{Address: backend.addr}}}
				p := testPool(t, cfg)
				if via == "transport" {
					p = testPool(t, cfg, WithTransport(struct{ http.RoundTripper }{p.newTransport()}))
				}

				req := httptest.NewRequest("GET", "http://front.test/", nil)
				req.RequestURI = ""
				req.Body = nil
				req.Method = tc.method
				req.Host = tc.host
				resp, err := p.RoundTrip(req)
				if err == nil {
					resp.Body.Close()
				}
				if tc.wantErr {
					if err == nil {
						t.Errorf("%s: RoundTrip with method %q succeeded, want an error", via, tc.method)
					}
					// A backend may read a request line with a space in
					// the method as another request.
					if got := backend.accepted.Load(); got != 0 {
						t.Errorf("%s: backend accepted %d connections for method %q, want 0", via, got, tc.method)
					}
					continue
				}
				if err != nil {
					t.Errorf("%s: RoundTrip with Host %q = %v, want a response", via, tc.host, err)
					continue
				}
				if got := backend.last().Host; got != tc.wantHost {
					t.Errorf("%s: backend received Host %q for %q, want %q", via, got, tc.host, tc.wantHost)
				}
			}
		})
	}
}

// TestExchangeClientGoneAsHeadArrives cancels the request while the final
// response head is already in the connection's buffer: here from the 1xx
// relay, just before the head is parsed. Clearing the head's deadline
// must not undo the one that ends the wait on the cancel, or the read of
// a body the backend holds open blocks although no client is left.
func TestExchangeClientGoneAsHeadArrives(t *testing.T) {
	backend := newScriptedBackend(t, func(*http.Request, int) (string, bool) {
		return "HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", false
	})
	p := testPool(t, config.Upstream{Backends: []config.Backend{{Address: backend.addr}}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	trace := &httptrace.ClientTrace{Got1xxResponse: func(int, textproto.MIMEHeader) error {
		cancel()
		// Let the function that context.AfterFunc starts on the cancel
		// set its deadline before the final head is read.
		time.Sleep(50 * time.Millisecond)
		return nil
	}}
	req := httptest.NewRequest("GET", "http://front.test/", nil)
	req.RequestURI = ""
	req = req.WithContext(httptrace.WithClientTrace(ctx, trace))

	done := make(chan error, 1)
	go func() {
		resp, err := p.RoundTrip(req)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("RoundTrip and body read after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RoundTrip or its body read still blocked 5s after the cancel")
	}
	if got := p.Stats()[0].Conns; got != 0 {
		t.Errorf("open connections after cancel = %d, want 0", got)
	}
}

// TestExchangeNoReplayAfterInformational has the backend send a 1xx
// response on a reused connection and close it. The client has seen the
// 1xx response and the backend has begun to respond, so the request must
// not go again, as with the transport, which retries only when the
// backend sent no byte.
func TestExchangeNoReplayAfterInformational(t *testing.T) {
	for _, via := range []string{"direct", "transport"} {
		backend := newScriptedBackend(t, func(_ *http.Request, n int) (string, bool) {
			if n == 1 {
				return "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n", true
			}
			return okResponse, false
		})
		cfg := config.Upstream{Backends: []config.Backend{{Address: backend.addr}}, MaxIdlePerBackend: 4}
		p := testPool(t, cfg)
		if via == "transport" {
			p = testPool(t, cfg, WithTransport(struct{ http.RoundTripper }{p.newTransport()}))
		}
		first := httptest.NewRequest("GET", "http://front.test/", nil)
		first.RequestURI = ""
		roundTripBody(t, p, first)

		informational := 0
		trace := &httptrace.ClientTrace{Got1xxResponse: func(int, textproto.MIMEHeader) error {
			informational++
			return nil
		}}
		req := httptest.NewRequest("GET", "http://front.test/", nil)
		req.RequestURI = ""
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
		if resp, err := p.RoundTrip(req); err == nil {
			resp.Body.Close()
			t.Errorf("%s: RoundTrip after a 1xx and a close succeeded with %d, want an error", via, resp.StatusCode)
		}
		if informational != 1 {
			t.Errorf("%s: client trace saw %d 1xx responses, want 1", via, informational)
		}
		backend.mu.Lock()
		got := len(backend.requests)
		backend.mu.Unlock()
		if got != 2 {
			t.Errorf("%s: backend received %d requests, want 2", via, got)
		}
	}
}

// TestExchangeTimeoutAfterInformational has the backend send a 1xx
// response and then nothing: the wait still ends as a response header
// timeout, which the proxy maps to 504.
func TestExchangeTimeoutAfterInformational(t *testing.T) {
	backend := newScriptedBackend(t, func(*http.Request, int) (string, bool) {
		return "HTTP/1.1 103 Early Hints\r\n\r\n", false
	})
	p := testPool(t, config.Upstream{
		Backends:              []config.Backend{{Address: backend.addr}},
		ResponseHeaderTimeout: config.Duration(200 * time.Millisecond),
	})
	req := httptest.NewRequest("GET", "http://front.test/", nil)
	req.RequestURI = ""
	_, err := p.RoundTrip(req)
	if !errors.Is(err, errHeadTimeout) {
		t.Errorf("RoundTrip after a 1xx and silence = %v, want %v", err, errHeadTimeout)
	}
}

// BenchmarkAppendRequestHead writes the head of a typical proxied GET,
// with the method, Host and target checks.
func BenchmarkAppendRequestHead(b *testing.B) {
	req := httptest.NewRequest("GET", "http://backend.test/api/items?id=42", nil)
	req.Host = "www.example.test"
	req.Header = http.Header{
		"Accept":            {"*/*"},
		"User-Agent":        {"bench/1.0"},
		"X-Forwarded-For":   {"192.0.2.1"},
		"X-Forwarded-Proto": {"https"},
		"X-Request-Id":      {"0123456789abcdef0123456789abcdef"},
	}
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = appendRequestHead(buf[:0], req); err != nil {
			b.Fatal(err)
		}
	}
}

// resetOnWrite is a connection whose writes fail before any byte, as a
// write does once a reset from the backend has arrived.
type resetOnWrite struct{ net.Conn }

func (resetOnWrite) Write([]byte) (int, error) {
	return 0, &net.OpError{Op: "write", Net: "tcp", Err: syscall.ECONNRESET}
}

// TestExchangeResendsUnwritten gives a POST an idle connection whose write
// fails before the first byte. The backend cannot have seen the request,
// so it goes again on a new connection, as with net/http's transport, and
// reaches the backend once.
func TestExchangeResendsUnwritten(t *testing.T) {
	backend := newScriptedBackend(t, func(*http.Request, int) (string, bool) { return okResponse, false })
	p := testPool(t, config.Upstream{Backends: []config.Backend{{Address: backend.addr}}, MaxIdlePerBackend: 4})
	first := httptest.NewRequest("GET", "http://front.test/", nil)
	first.RequestURI = ""
	roundTripBody(t, p, first)

	b := p.backends[0]
	c := p.direct.take(b, p.now(), time.Minute)
	if c == nil {
		t.Fatal("no idle connection after the first request")
	}
	// Without a descriptor the idle check passes, so the write is what
	// fails.
	c.Conn, c.raw = resetOnWrite{c.Conn}, nil
	if !p.direct.put(c, 4) {
		t.Fatal("the idle connection did not go back to the pool")
	}

	req := httptest.NewRequest("POST", "http://front.test/act", nil)
	req.RequestURI = ""
	req.Body = nil
	resp, body := roundTripBody(t, p, req)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("POST after an unwritten request: status %d, want 200", resp.StatusCode)
	}
	if body != "ok" {
		t.Errorf("POST after an unwritten request: body %q, want %q", body, "ok")
	}
	backend.mu.Lock()
	defer backend.mu.Unlock()
	acts := 0
	for _, r := range backend.requests {
		if r.URL.Path == "/act" {
			acts++
		}
	}
	if acts != 1 {
		t.Errorf("backend received POST /act %d times, want 1", acts)
	}
}
