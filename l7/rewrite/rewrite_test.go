package rewrite

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tidegate/tidegate/shared/config"
)

// seen is what the test backend received.
type seen struct {
	Path   string
	Query  string
	Host   string
	Header http.Header
}

func peerAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

// startChain runs a backend that records each request and a proxy with the
// rewrite middleware in front of httputil.ReverseProxy, both on 127.0.0.1.
func startChain(t *testing.T, cfg *config.RewritePolicy, reg prometheus.Registerer) (string, chan seen) {
	t.Helper()
	got := make(chan seen, 1)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.URL.EscapedPath(), r.URL.RawQuery, r.Host, r.Header.Clone()}
		w.Header().Set("Server", "backend")
		w.Header().Set("X-Backend-Secret", "s3cret")
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "from backend")
	}))
	t.Cleanup(backend.Close)
	target, _ := url.Parse(backend.URL)
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(target)
		pr.Out.Host = pr.In.Host
	}}
	rw, err := New(cfg, Options{Route: "web", ClientAddr: peerAddr, Registerer: reg})
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	front := httptest.NewServer(rw.Middleware(proxy))
	t.Cleanup(front.Close)
	return front.URL, got
}

func noRedirects() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func TestPathRewrites(t *testing.T) {
	tests := []struct {
		name   string
		path   *config.PathRewrite
		target string
		want   string // path the backend receives
		query  string
	}{
		{"strip prefix", &config.PathRewrite{StripPrefix: "/api"}, "/api/users/7?x=1&y=2", "/users/7", "x=1&y=2"},
		{"strip prefix exact", &config.PathRewrite{StripPrefix: "/api"}, "/api", "/", ""},
		{"strip prefix segment only", &config.PathRewrite{StripPrefix: "/api"}, "/apix/users", "/apix/users", ""},
		{"strip prefix trailing slash", &config.PathRewrite{StripPrefix: "/api/"}, "/api/v1/", "/v1/", ""},
		{"replace prefix", &config.PathRewrite{ReplacePrefix: &config.PrefixReplacement{From: "/v1", To: "/internal/v2"}}, "/v1/items?q=a%20b", "/internal/v2/items", "q=a%20b"},
		{"replace prefix exact", &config.PathRewrite{ReplacePrefix: &config.PrefixReplacement{From: "/v1", To: "/v2"}}, "/v1", "/v2", ""},
		{"regex groups", &config.PathRewrite{Regex: &config.RegexReplacement{Pattern: `^/u/(\d+)/posts/(?P<post>\d+)$`, Replacement: "/users/$1/p/${post}"}}, "/u/42/posts/9?full=1", "/users/42/p/9", "full=1"},
		{"regex no match", &config.PathRewrite{Regex: &config.RegexReplacement{Pattern: `^/u/(\d+)$`, Replacement: "/users/$1"}}, "/u/abc", "/u/abc", ""},
		{"regex result normalised", &config.PathRewrite{Regex: &config.RegexReplacement{Pattern: `^/a/(.*)$`, Replacement: "/b//$1/./c/.."}}, "/a/x", "/b/x/", ""},
		{"escapes kept", &config.PathRewrite{StripPrefix: "/files"}, "/files/a%20b/%E2%9C%93", "/a%20b/%E2%9C%93", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			front, got := startChain(t, &config.RewritePolicy{Path: tc.path}, reg)
			resp, err := http.Get(front + tc.target)
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status = %d, want 200", resp.StatusCode)
			}
			s := <-got
			if s.Path != tc.want {
				t.Errorf("backend path = %q, want %q", s.Path, tc.want)
			}
			if s.Query != tc.query {
				t.Errorf("backend query = %q, want %q", s.Query, tc.query)
			}
		})
	}
}

func TestPathRewriteAboveRoot(t *testing.T) {
	front, got := startChain(t, &config.RewritePolicy{Path: &config.PathRewrite{
		Regex: &config.RegexReplacement{Pattern: `^/r/(.*)$`, Replacement: "/x/../../$1"},
	}}, nil)
	resp, err := http.Get(front + "/r/etc")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("status = %d, want 400", resp.StatusCode)
	}
	select {
	case s := <-got:
		t.Errorf("backend was reached with %q", s.Path)
	default:
	}
}

func TestHeaderRules(t *testing.T) {
	cfg := &config.RewritePolicy{
		RequestHeaders: &config.HeaderRules{
			Remove: []string{"X-Debug", "Cookie"},
			Set: map[string]string{
				"X-Client":  "${client_ip}",
				"X-Route":   "${route} ${method} ${scheme}://${hostname}${request_uri}",
				"X-Price":   "$$5",
				"X-Request": "${request_id}",
			},
			Add: map[string]string{"X-Tag": "added"},
		},
		ResponseHeaders: &config.HeaderRules{
			Remove: []string{"X-Backend-Secret"},
			Set:    map[string]string{"Server": "tidegate"},
			Add:    map[string]string{"Strict-Transport-Security": "max-age=60"},
		},
	}
	reg := prometheus.NewRegistry()
	front, got := startChain(t, cfg, reg)
	req, _ := http.NewRequest("GET", front+"/p?a=1", nil)
	req.Host = "shop.example:8080"
	req.Header.Set("X-Debug", "1")
	req.Header.Set("Cookie", "a=b")
	req.Header.Set("X-Tag", "original")
	req.Header.Set("X-Client", "1.2.3.4")
	req.Header.Set("X-Request-Id", "req-77")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	resp.Body.Close()
	s := <-got

	wantReq := map[string][]string{
		"X-Client":  {"127.0.0.1"},
		"X-Route":   {"web GET http://shop.example/p?a=1"},
		"X-Price":   {"$5"},
		"X-Request": {"req-77"},
		"X-Tag":     {"original", "added"},
		"X-Debug":   nil,
		"Cookie":    nil,
	}
	for name, want := range wantReq {
		if got := s.Header.Values(name); !equal(got, want) {
			t.Errorf("backend header %s = %q, want %q", name, got, want)
		}
	}
	if s.Host != "shop.example:8080" {
		t.Errorf("backend Host = %q, want the client's", s.Host)
	}
	wantResp := map[string][]string{
		"Server":                    {"tidegate"},
		"X-Backend-Secret":          nil,
		"Strict-Transport-Security": {"max-age=60"},
	}
	for name, want := range wantResp {
		if got := resp.Header.Values(name); !equal(got, want) {
			t.Errorf("response header %s = %q, want %q", name, got, want)
		}
	}
	rw, _ := New(cfg, Options{Route: "web", Registerer: reg})
	if v := testutil.ToFloat64(rw.actions.WithLabelValues(ActionRequestHeaders)); v != 1 {
		t.Errorf("request_headers actions = %v, want 1", v)
	}
}

func TestSetHostHeader(t *testing.T) {
	front, got := startChain(t, &config.RewritePolicy{RequestHeaders: &config.HeaderRules{
		Set: map[string]string{"Host": "internal.svc"},
	}}, nil)
	resp, err := http.Get(front + "/")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	resp.Body.Close()
	if s := <-got; s.Host != "internal.svc" {
		t.Errorf("backend Host = %q, want internal.svc", s.Host)
	}
}

func TestHeaderInjectionStripped(t *testing.T) {
	rw, err := New(&config.RewritePolicy{RequestHeaders: &config.HeaderRules{
		Set: map[string]string{"X-Host": "${host}"},
	}}, Options{Route: "web"})
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.Host = "a\r\nX-Evil: 1"
	var sent string
	rw.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sent = r.Header.Get("X-Host")
	})).ServeHTTP(httptest.NewRecorder(), r)
	if sent != "aX-Evil: 1" {
		t.Errorf("X-Host = %q, want CR and LF removed", sent)
	}
}

func TestRedirects(t *testing.T) {
	tests := []struct {
		status   int
		location string
		host     string
		target   string
		want     string
	}{
		{301, "https://${hostname}${request_uri}", "shop.example:80", "/a/b?x=1", "https://shop.example/a/b?x=1"},
		{302, "/login?next=${path}", "shop.example", "/account", "/login?next=/account"},
		{307, "https://${host}${request_uri}", "shop.example", "/p", "https://shop.example/p"},
		{308, "https://${hostname}:8443${path}", "[::1]:8080", "/p", "https://[::1]:8443/p"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			front, got := startChain(t, &config.RewritePolicy{Redirect: &config.Redirect{Status: tc.status, Location: tc.location}}, nil)
			req, _ := http.NewRequest("GET", front+tc.target, nil)
			req.Host = tc.host
			resp, err := noRedirects().Do(req)
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("status = %d, want %d", resp.StatusCode, tc.status)
			}
			if loc := resp.Header.Get("Location"); loc != tc.want {
				t.Errorf("Location = %q, want %q", loc, tc.want)
			}
			select {
			case s := <-got:
				t.Errorf("backend was reached with %q", s.Path)
			default:
			}
		})
	}
}

func TestFixedResponse(t *testing.T) {
	front, got := startChain(t, &config.RewritePolicy{FixedResponse: &config.FixedResponse{
		Status:  503,
		Headers: map[string]string{"Retry-After": "120", "Content-Type": "application/json"},
		Body:    `{"status":"maintenance"}`,
	}}, nil)
	resp, err := http.Get(front + "/anything")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 {
		t.Errorf("status = %d, want 503", resp.StatusCode)
	}
	var doc map[string]string
	if err := json.Unmarshal(body, &doc); err != nil || doc["status"] != "maintenance" {
		t.Errorf("body = %q, want the configured JSON", body)
	}
	if resp.Header.Get("Retry-After") != "120" || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("headers = %v, want the configured ones", resp.Header)
	}
	if resp.ContentLength != int64(len(body)) {
		t.Errorf("Content-Length = %d, want %d", resp.ContentLength, len(body))
	}
	select {
	case s := <-got:
		t.Errorf("backend was reached with %q", s.Path)
	default:
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func BenchmarkRequestHeaders(b *testing.B) {
	rw, err := New(&config.RewritePolicy{RequestHeaders: &config.HeaderRules{
		Remove: []string{"X-Debug"},
		Set:    map[string]string{"X-Client": "${client_ip}", "X-Origin": "${scheme}://${hostname}${request_uri}"},
		Add:    map[string]string{"X-Tag": "edge"},
	}}, Options{Route: "web", ClientAddr: peerAddr})
	if err != nil {
		b.Fatalf("New() error = %v", err)
	}
	h := rw.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	r := httptest.NewRequest("GET", "http://shop.example/p?a=1", nil)
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		r.Header = http.Header{"X-Debug": {"1"}, "Accept": {"*/*"}}
		h.ServeHTTP(w, r)
	}
}

func BenchmarkPathRegex(b *testing.B) {
	rw, err := New(&config.RewritePolicy{Path: &config.PathRewrite{
		Regex: &config.RegexReplacement{Pattern: `^/u/(\d+)/posts/(\d+)$`, Replacement: "/users/$1/p/$2"},
	}}, Options{Route: "web"})
	if err != nil {
		b.Fatalf("New() error = %v", err)
	}
	h := rw.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest("GET", "/u/42/posts/9", nil)
		h.ServeHTTP(w, r)
	}
}

func FuzzParseTemplate(f *testing.F) {
	for _, s := range []string{"plain", "$$5", "${host}", "https://${hostname}${request_uri}", "${", "a${client_ip}b$$"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tmpl, err := parseTemplate(s)
		if err != nil {
			return
		}
		// With every variable empty, expansion leaves the literal text.
		var literal string
		for _, p := range tmpl.parts {
			literal += p.literal
		}
		r := httptest.NewRequest("GET", "/", nil)
		r.Host = ""
		r.URL.Path = ""
		r.Method = ""
		got := tmpl.expand(vars{r: r, opts: &Options{}})
		if got != literal && !containsVariable(tmpl, "scheme", "path", "request_uri") {
			t.Errorf("expand(%q) = %q, want the literal text %q", s, got, literal)
		}
	})
}

func containsVariable(t template, names ...string) bool {
	for _, p := range t.parts {
		for _, n := range names {
			if p.variable == n {
				return true
			}
		}
	}
	return false
}
