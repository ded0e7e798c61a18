package inspect

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tidegate/tidegate/shared/config"
)

// peerAddr replaces the core's accessor of the PROXY-header address.
func peerAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

// pathRecorder records the path and raw URI the backend handler receives.
type pathRecorder struct{ got chan string }

func (p pathRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.got <- r.URL.EscapedPath() + " " + r.RequestURI
	io.WriteString(w, "ok")
}

func newReporter(reg prometheus.Registerer) *Reporter {
	return NewReporter(NewMetrics(reg), slog.New(slog.DiscardHandler))
}

func rawRequest(t *testing.T, addr, raw string) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	io.WriteString(c, raw)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response to %q: %v", raw, err)
	}
	return resp
}

func TestNormalizeMiddleware(t *testing.T) {
	rec := pathRecorder{got: make(chan string, 1)}
	reg := prometheus.NewRegistry()
	srv := httptest.NewServer(Normalize(newReporter(reg), peerAddr, rec))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")

	tests := []struct {
		target string
		status int
		seen   string
	}{
		{"/a//b/./c/../d?x=1&y=%2F", 200, "/a/b/d /a/b/d?x=1&y=%2F"},
		{"/%7euser/%2e%2e/admin", 200, "/admin /admin"},
		{"/a%20b/", 200, "/a%20b/ /a%20b/"},
		{"/a/%2Fb", 400, ""},
		{"/../etc/passwd", 400, ""},
		{"/a/%2e%2e/%2e%2e/x", 400, ""},
	}
	for _, tc := range tests {
		t.Run(tc.target, func(t *testing.T) {
			resp := rawRequest(t, addr, "GET "+tc.target+" HTTP/1.1\r\nHost: a\r\n\r\n")
			if resp.StatusCode != tc.status {
				t.Fatalf("GET %s: status %d, want %d", tc.target, resp.StatusCode, tc.status)
			}
			if tc.seen == "" {
				select {
				case got := <-rec.got:
					t.Errorf("GET %s reached the backend as %q", tc.target, got)
				default:
				}
				return
			}
			if got := <-rec.got; got != tc.seen {
				t.Errorf("GET %s: backend saw %q, want %q", tc.target, got, tc.seen)
			}
		})
	}
	if n := testutil.ToFloat64(NewMetrics(reg).rejected.WithLabelValues(ReasonEncodedSlash, "400")); n != 1 {
		t.Errorf("encoded slash rejections = %v, want 1", n)
	}
}

// TestNormalizeRejectsHTTP2Fields calls the handler with requests that
// only HTTP/2 pseudo-header fields can produce: a method with a space, an
// authority with a space, a query with a space or a control byte.
func TestNormalizeRejectsHTTP2Fields(t *testing.T) {
	reg := prometheus.NewRegistry()
	rec := pathRecorder{got: make(chan string, 1)}
	h := Normalize(newReporter(reg), peerAddr, rec)
	tests := []struct {
		name   string
		edit   func(r *http.Request)
		reason string
	}{
		{"method with a space", func(r *http.Request) { r.Method = "GET /admin" }, ReasonBadMethod},
		{"empty method", func(r *http.Request) { r.Method = "" }, ReasonBadMethod},
		{"authority with a space", func(r *http.Request) { r.Host = "a b" }, ReasonBadHost},
		{"query with a space", func(r *http.Request) { r.URL.RawQuery = "a= HTTP/1.1" }, ReasonBadTarget},
		{"query with a control byte", func(r *http.Request) { r.URL.RawQuery = "a=\x01" }, ReasonBadTarget},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "http://a.test/p?q=1", nil)
			r.RemoteAddr = "192.0.2.1:1234"
			tc.edit(r)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusBadRequest {
				t.Errorf("status = %d, want 400", w.Code)
			}
			select {
			case got := <-rec.got:
				t.Errorf("request reached the backend as %q", got)
			default:
			}
			if n := testutil.ToFloat64(NewMetrics(reg).rejected.WithLabelValues(tc.reason, "400")); n == 0 {
				t.Errorf("no rejection counted with reason %s", tc.reason)
			}
		})
	}

	r := httptest.NewRequest("GET", "http://a.test/p?q=1&r=%20", nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Errorf("valid request: status %d, want 200", w.Code)
	}
}

func TestNormalizeRejectsExpectation(t *testing.T) {
	rec := pathRecorder{got: make(chan string, 1)}
	srv := httptest.NewServer(Normalize(newReporter(nil), peerAddr, rec))
	t.Cleanup(srv.Close)
	resp := rawRequest(t, strings.TrimPrefix(srv.URL, "http://"), "POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx")
	if resp.StatusCode != http.StatusExpectationFailed {
		t.Errorf("status = %d, want 417", resp.StatusCode)
	}
}

func TestAccessMiddleware(t *testing.T) {
	tests := []struct {
		name   string
		policy config.AccessPolicy
		raw    string
		status int
		allow  string
	}{
		{"no rules", config.AccessPolicy{}, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 200, ""},
		{"allowed cidr", config.AccessPolicy{Allow: []string{"127.0.0.0/8"}}, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 200, ""},
		{"not in allow", config.AccessPolicy{Allow: []string{"10.0.0.0/8", "::1"}}, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 403, ""},
		{"denied", config.AccessPolicy{Deny: []string{"127.0.0.1"}}, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 403, ""},
		{"deny wins", config.AccessPolicy{Allow: []string{"127.0.0.0/8"}, Deny: []string{"127.0.0.0/24"}}, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 403, ""},
		{"xff ignored", config.AccessPolicy{Allow: []string{"10.0.0.0/8"}}, "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.1.1.1\r\n\r\n", 403, ""},
		{"method ok", config.AccessPolicy{Methods: []string{"GET", "POST"}}, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 200, ""},
		{"head with get", config.AccessPolicy{Methods: []string{"GET"}}, "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", 200, ""},
		{"method rejected", config.AccessPolicy{Methods: []string{"GET", "POST"}}, "DELETE / HTTP/1.1\r\nHost: a\r\n\r\n", 405, "GET, POST, HEAD"},
		{"required present", config.AccessPolicy{RequiredHeaders: []string{"x-api-key"}}, "GET / HTTP/1.1\r\nHost: a\r\nX-Api-Key: k\r\n\r\n", 200, ""},
		{"required missing", config.AccessPolicy{RequiredHeaders: []string{"x-api-key"}}, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, ""},
		{"required empty", config.AccessPolicy{RequiredHeaders: []string{"x-api-key"}}, "GET / HTTP/1.1\r\nHost: a\r\nX-Api-Key:\r\n\r\n", 400, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			acc, err := NewAccess(&tc.policy, peerAddr, newReporter(nil))
			if err != nil {
				t.Fatalf("NewAccess() error = %v", err)
			}
			srv := httptest.NewServer(acc.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "ok")
			})))
			t.Cleanup(srv.Close)
			resp := rawRequest(t, strings.TrimPrefix(srv.URL, "http://"), tc.raw)
			if resp.StatusCode != tc.status {
				t.Errorf("status = %d, want %d", resp.StatusCode, tc.status)
			}
			if got := resp.Header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow = %q, want %q", got, tc.allow)
			}
		})
	}
}

// TestAccessExpectContinue checks that a rejected request with Expect:
// 100-continue gets its final status without a 100 first.
func TestAccessExpectContinue(t *testing.T) {
	acc, err := NewAccess(&config.AccessPolicy{Deny: []string{"127.0.0.0/8"}}, peerAddr, newReporter(nil))
	if err != nil {
		t.Fatalf("NewAccess() error = %v", err)
	}
	bodyRead := make(chan bool, 1)
	srv := httptest.NewServer(Normalize(newReporter(nil), peerAddr, acc.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		bodyRead <- true
	}))))
	t.Cleanup(srv.Close)
	c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("read status line: %v", err)
	}
	if !strings.HasPrefix(line, "HTTP/1.1 403 ") {
		t.Errorf("first status line = %q, want a 403 and no 100 Continue", line)
	}
	select {
	case <-bodyRead:
		t.Errorf("handler read the body of a rejected request")
	default:
	}
}

// TestNormalizeThroughProxy checks that the backend behind
// httputil.ReverseProxy receives the normalised path, escapes included.
func TestNormalizeThroughProxy(t *testing.T) {
	got := make(chan string, 1)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.RequestURI
	}))
	t.Cleanup(backend.Close)
	target, _ := url.Parse(backend.URL)
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target) }}
	front := httptest.NewServer(Normalize(newReporter(nil), peerAddr, proxy))
	t.Cleanup(front.Close)

	resp := rawRequest(t, strings.TrimPrefix(front.URL, "http://"), "GET /a//b/%2e%2e/c%3Fd/./e%7E?q=%2F HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	if uri := <-got; uri != "/a/c%3Fd/e~?q=%2F" {
		t.Errorf("backend request URI = %q, want /a/c%%3Fd/e~?q=%%2F", uri)
	}
}

func TestReporterCountsAndLogs(t *testing.T) {
	var logs strings.Builder
	reg := prometheus.NewRegistry()
	rep := NewReporter(NewMetrics(reg), slog.New(slog.NewTextHandler(&logs, nil)))
	client := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 4000}
	for range 3 {
		rep.Report(Rejection{Status: 400, Reason: ReasonCLAndTE, Client: client})
	}
	if n := testutil.ToFloat64(NewMetrics(reg).rejected.WithLabelValues(ReasonCLAndTE, "400")); n != 3 {
		t.Errorf("rejected_total = %v, want 3", n)
	}
	line := logs.String()
	for _, want := range []string{"request rejected", "reason=" + ReasonCLAndTE, "status=400", "client=192.0.2.7:4000", "component=inspect"} {
		if !strings.Contains(line, want) {
			t.Errorf("log %q does not contain %q", line, want)
		}
	}
}
