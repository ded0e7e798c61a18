package l7

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/tidegate/tidegate/l7/conninfo"
	"github.com/tidegate/tidegate/l7/upstream"
	"github.com/tidegate/tidegate/shared/config"
)

// captureTransport records the outbound request and returns a 200 response.
type captureTransport struct {
	last *http.Request
	resp func(*http.Request) (*http.Response, error)
}

func (c *captureTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.last = r
	if c.resp != nil {
		return c.resp(r)
	}
	return &http.Response{
		StatusCode: 200,
		Header:     http.Header{"X-Request-Id": {"from-backend"}, "Connection": {"X-Secret"}, "X-Secret": {"1"}},
		Body:       io.NopCloser(strings.NewReader("ok")),
		Request:    r,
	}, nil
}

const testConfig = `
l7:
  listeners:
    - name: edge
      address: 127.0.0.1:0
      trusted_forwarders: ["192.0.2.0/24"]
  routes:
    - name: api
      match:
        path_prefix: /api/
      upstream: api
    - name: web
      match:
        hosts: ["www.example.test"]
      upstream: web
  upstreams:
    - name: api
      backends:
        - address: 127.0.0.1:1
    - name: web
      backends:
        - address: 127.0.0.1:2
  access_log:
    path: "off"
`

// testServer builds a server whose pools all use rt, without binding.
func testServer(t testing.TB, rt http.RoundTripper, opts ...Option) (*Server, *listener) {
	t.Helper()
	f, err := config.Parse([]byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	opts = append(opts, func(o *options) { o.upstreamOpts = append(o.upstreamOpts, upstream.WithTransport(rt)) })
	s, err := New(f, slog.New(slog.DiscardHandler), nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s, s.listeners[0]
}

// clientRequest builds a request as the listener would see it from client.
func clientRequest(method, target, client string, tls bool) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	info := &conninfo.Info{
		Client:   netip.MustParseAddrPort(client),
		Local:    netip.MustParseAddrPort("10.1.1.1:443"),
		Listener: "edge",
		TLS:      tls,
	}
	return r.WithContext(conninfo.NewContext(r.Context(), info))
}

func TestForwardingHeaders(t *testing.T) {
	tests := []struct {
		name    string
		client  string
		tls     bool
		inbound map[string]string
		want    map[string]string
	}{
		{
			name:   "untrusted client forges everything",
			client: "203.0.113.5:1000",
			tls:    true,
			inbound: map[string]string{
				"X-Forwarded-For": "1.2.3.4", "X-Real-Ip": "1.2.3.4", "X-Forwarded-Proto": "http",
				"X-Forwarded-Host": "evil", "X-Forwarded-Port": "1", "Forwarded": "for=1.2.3.4",
			},
			want: map[string]string{
				"X-Forwarded-For": "203.0.113.5", "X-Real-Ip": "203.0.113.5", "X-Forwarded-Proto": "https",
				"X-Forwarded-Host": "www.example.test", "X-Forwarded-Port": "443",
				"Forwarded": "for=203.0.113.5;host=www.example.test;proto=https",
			},
		},
		{
			name:    "untrusted client names headers in Connection",
			client:  "203.0.113.5:1000",
			inbound: map[string]string{"X-Forwarded-For": "1.2.3.4", "Connection": "X-Forwarded-For, X-Real-IP"},
			want:    map[string]string{"X-Forwarded-For": "203.0.113.5", "X-Real-Ip": "203.0.113.5", "Connection": ""},
		},
		{
			name:   "trusted forwarder chain extended",
			client: "192.0.2.9:1000",
			inbound: map[string]string{
				"X-Forwarded-For": "1.2.3.4, 5.6.7.8", "X-Real-Ip": "1.2.3.4", "X-Forwarded-Proto": "https",
				"Forwarded": `for="[2001:db8::1]";proto=https`,
			},
			want: map[string]string{
				"X-Forwarded-For": "1.2.3.4, 5.6.7.8, 192.0.2.9", "X-Real-Ip": "1.2.3.4", "X-Forwarded-Proto": "https",
				"Forwarded": `for="[2001:db8::1]";proto=https, for=192.0.2.9;host=www.example.test;proto=http`,
			},
		},
		{
			name:    "trusted forwarder with malformed values",
			client:  "192.0.2.9:1000",
			inbound: map[string]string{"X-Forwarded-For": "not-an-ip", "Forwarded": "for=", "X-Forwarded-Proto": "gopher"},
			want: map[string]string{
				"X-Forwarded-For": "192.0.2.9", "X-Forwarded-Proto": "http",
				"Forwarded": "for=192.0.2.9;host=www.example.test;proto=http",
			},
		},
		{
			name:    "trusted forwarder header named in Connection is dropped",
			client:  "192.0.2.9:1000",
			inbound: map[string]string{"X-Forwarded-For": "1.2.3.4", "Connection": "X-Forwarded-For"},
			want:    map[string]string{"X-Forwarded-For": "192.0.2.9"},
		},
		{
			name:   "ipv6 client",
			client: "[2001:db8::7]:1000",
			want:   map[string]string{"X-Forwarded-For": "2001:db8::7", "Forwarded": `for="[2001:db8::7]";host=www.example.test;proto=http`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := &captureTransport{}
			_, l := testServer(t, tr)
			r := clientRequest("GET", "http://www.example.test/", tc.client, tc.tls)
			for k, v := range tc.inbound {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			l.ServeHTTP(w, r)
			if w.Code != 200 {
				t.Fatalf("status %d, want 200", w.Code)
			}
			for k, want := range tc.want {
				if got := strings.Join(tr.last.Header.Values(k), " | "); got != want {
					t.Errorf("outbound %s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestRequestID(t *testing.T) {
	tr := &captureTransport{}
	_, l := testServer(t, tr)

	r := clientRequest("GET", "http://www.example.test/", "203.0.113.5:1", false)
	r.Header.Set("X-Request-Id", "keep-me")
	w := httptest.NewRecorder()
	l.ServeHTTP(w, r)
	if got := tr.last.Header.Get("X-Request-Id"); got != "keep-me" {
		t.Errorf("outbound X-Request-Id = %q, want keep-me", got)
	}
	if got := w.Header().Values("X-Request-Id"); len(got) != 1 || got[0] != "keep-me" {
		t.Errorf("response X-Request-Id = %q, want [keep-me] (the backend's copy dropped)", got)
	}
	if got := w.Header().Get("X-Secret"); got != "" {
		t.Errorf("response kept X-Secret %q that the backend named in Connection", got)
	}

	r = clientRequest("GET", "http://www.example.test/", "203.0.113.5:1", false)
	r.Header.Set("X-Request-Id", "bad id with spaces")
	w = httptest.NewRecorder()
	l.ServeHTTP(w, r)
	gen := w.Header().Get("X-Request-Id")
	if gen == "" || gen == "bad id with spaces" {
		t.Errorf("response X-Request-Id = %q, want a generated ID", gen)
	}
	if got := tr.last.Header.Get("X-Request-Id"); got != gen {
		t.Errorf("outbound X-Request-Id = %q, want the generated %q", got, gen)
	}
}

func TestRoutingStatus(t *testing.T) {
	tr := &captureTransport{}
	_, l := testServer(t, tr)
	tests := []struct {
		name, url string
		want      int
		backend   string
	}{
		{"api route", "http://any.test/api/x", 200, "127.0.0.1:1"},
		{"web route", "http://www.example.test/", 200, "127.0.0.1:2"},
		{"no route", "http://other.test/", 404, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr.last = nil
			w := httptest.NewRecorder()
			l.ServeHTTP(w, clientRequest("GET", tc.url, "203.0.113.5:1", false))
			if w.Code != tc.want {
				t.Errorf("GET %s = %d, want %d", tc.url, w.Code, tc.want)
			}
			if tc.backend != "" && (tr.last == nil || tr.last.URL.Host != tc.backend) {
				t.Errorf("GET %s reached %v, want backend %s", tc.url, tr.last, tc.backend)
			}
		})
	}
}

func TestStatusForError(t *testing.T) {
	live := httptest.NewRequest("GET", "/", nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	clientGone := live.WithContext(ctx)
	tests := []struct {
		name string
		r    *http.Request
		err  error
		want int
	}{
		{"no healthy backend", live, upstream.ErrNoBackend, 502},
		{"connect refused", live, &net.OpError{Op: "dial", Err: errors.New("connection refused")}, 502},
		{"reset mid-response", live, io.ErrUnexpectedEOF, 502},
		{"response header timeout", live, &net.OpError{Op: "read", Err: timeoutError{}}, 504},
		{"deadline exceeded", live, fmt.Errorf("wrapped: %w", context.DeadlineExceeded), 504},
		{"pool at capacity", live, upstream.ErrOverloaded, 503},
		{"request body above limit", live, fmt.Errorf("write body: %w", &http.MaxBytesError{Limit: 1024}), 413},
		{"client gone", clientGone, io.ErrUnexpectedEOF, 499},
		{"canceled", live, context.Canceled, 499},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := statusForError(tc.r, tc.err); got != tc.want {
				t.Errorf("statusForError(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

func TestUpstreamErrorsMapToStatus(t *testing.T) {
	tr := &captureTransport{resp: func(*http.Request) (*http.Response, error) {
		return nil, &net.OpError{Op: "read", Err: timeoutError{}}
	}}
	_, l := testServer(t, tr)
	w := httptest.NewRecorder()
	l.ServeHTTP(w, clientRequest("GET", "http://www.example.test/", "203.0.113.5:1", false))
	if w.Code != http.StatusGatewayTimeout {
		t.Errorf("status after upstream timeout = %d, want 504", w.Code)
	}
	if w.Header().Get("X-Request-Id") == "" {
		t.Error("error response has no X-Request-Id")
	}
}

func TestMiddlewareOrder(t *testing.T) {
	var order []string
	mw := func(name string) Middleware {
		return func(_ *config.L7, rt *config.Route, next http.Handler) (http.Handler, error) {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				order = append(order, name+":"+rt.Name)
				next.ServeHTTP(w, r)
			}), nil
		}
	}
	_, l := testServer(t, &captureTransport{}, WithMiddleware("first", mw("first")), WithMiddleware("second", mw("second")))
	l.ServeHTTP(httptest.NewRecorder(), clientRequest("GET", "http://x.test/api/a", "203.0.113.5:1", false))
	if got := strings.Join(order, ","); got != "first:api,second:api" {
		t.Errorf("middleware order = %s, want first:api,second:api", got)
	}
}

func TestMisdirected(t *testing.T) {
	set := &certSet{exact: map[string]*tls.Certificate{}, wildcard: map[string]*tls.Certificate{}}
	a, b := &tls.Certificate{}, &tls.Certificate{}
	set.def = a
	set.exact["a.test"] = a
	set.wildcard["b.test"] = b
	st := &certStore{}
	st.current.Store(set)
	tests := []struct {
		sni, host string
		want      bool
	}{
		{"a.test", "a.test", false},
		{"a.test", "x.b.test", true},
		{"x.b.test", "y.b.test", false},
		{"x.b.test", "a.test", true},
		{"a.test", "unknown.test", false},
		{"", "x.b.test", false},
		{"unknown.test", "a.test", false},
	}
	for _, tc := range tests {
		if got := st.misdirected(tc.sni, tc.host); got != tc.want {
			t.Errorf("misdirected(sni %q, host %q) = %v, want %v", tc.sni, tc.host, got, tc.want)
		}
	}
}

// BenchmarkProxyRequest measures the proxy's own per-request work (request
// ID, routing, forwarding headers, ReverseProxy, access-log entry and
// metrics) with a stub transport in place of the backend.
func BenchmarkProxyRequest(b *testing.B) {
	tr := &captureTransport{resp: func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
	}}
	_, l := testServer(b, tr)
	r := clientRequest("GET", "http://www.example.test/page", "203.0.113.5:1", true)
	r.Header.Set("User-Agent", "bench")
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		r.Header.Del("X-Request-Id")
		l.ServeHTTP(w, r)
	}
}

type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}

func TestRequestIDSurvivesConnectionHeader(t *testing.T) {
	tr := &captureTransport{}
	_, l := testServer(t, tr)
	r := clientRequest("GET", "http://www.example.test/", "203.0.113.5:1", false)
	r.Header.Set("X-Request-Id", "abc")
	r.Header.Set("Connection", "X-Request-Id")
	l.ServeHTTP(httptest.NewRecorder(), r)
	if got := tr.last.Header.Get("X-Request-Id"); got != "abc" {
		t.Errorf("outbound X-Request-Id = %q, want abc", got)
	}
}
