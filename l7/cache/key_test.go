package cache

import (
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
)

func TestBuildKey(t *testing.T) {
	tests := []struct {
		name   string
		url    string
		host   string
		tls    bool
		want   string
		reason string
	}{
		{"plain", "/a?b=1", "example.com", false, "GET http://example.com/a?b=1", ""},
		{"https", "/a", "example.com", true, "GET https://example.com/a", ""},
		{"default http port dropped", "/a", "example.com:80", false, "GET http://example.com/a", ""},
		{"default https port dropped", "/a", "example.com:443", true, "GET https://example.com/a", ""},
		{"443 kept on http", "/a", "example.com:443", false, "GET http://example.com:443/a", ""},
		{"other port kept", "/a", "example.com:8080", false, "GET http://example.com:8080/a", ""},
		{"host case folded", "/a", "EXAMPLE.com", false, "GET http://example.com/a", ""},
		{"trailing dot dropped", "/a", "example.com.", false, "GET http://example.com/a", ""},
		{"ipv6 with default port", "/a", "[::1]:80", false, "GET http://[::1]/a", ""},
		{"unreserved escapes decoded", "/%7Euser/%41", "h", false, "GET http://h/~user/A", ""},
		{"reserved escapes upper-cased", "/a%2fb", "h", false, "GET http://h/a%2Fb", ""},
		{"dot segments kept", "/a/./b/../c", "h", false, "GET http://h/a/./b/../c", ""},
		{"query order kept", "/a?y=2&x=1", "h", false, "GET http://h/a?y=2&x=1", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := http.NewRequest(http.MethodGet, "http://placeholder"+tc.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			r.Host = tc.host
			if tc.tls {
				r.TLS = &tls.ConnectionState{}
			}
			if got := buildKey(r, nil).primary; got != tc.want {
				t.Errorf("buildKey(%s %s) = %q, want %q", tc.host, tc.url, got, tc.want)
			}
		})
	}
}

func TestExtraKeyNeverHasClientByDefault(t *testing.T) {
	a := httptestRequest("GET", "X-Tenant", "a")
	a.RemoteAddr = "192.0.2.1:1234"
	b := httptestRequest("GET", "X-Tenant", "a")
	b.RemoteAddr = "192.0.2.2:1234"
	if ka, kb := buildKey(a, nil), buildKey(b, nil); ka != kb {
		t.Errorf("keys differ by client address: %q vs %q", ka, kb)
	}
	parts := parseKeyParts([]string{"client"})
	if ka, kb := buildKey(a, parts), buildKey(b, parts); ka == kb {
		t.Errorf("with the client key part, keys are equal: %q", ka)
	}
}

func TestNegotiateEncoding(t *testing.T) {
	tests := []struct {
		accept []string
		want   string
	}{
		{nil, "identity"},
		{[]string{""}, "identity"},
		{[]string{"gzip"}, "gzip"},
		{[]string{"gzip, deflate, br"}, "br"},
		{[]string{"gzip, zstd"}, "zstd"},
		{[]string{"br;q=0.5, gzip"}, "gzip"},
		{[]string{"br;q=0, gzip;q=0"}, "identity"},
		{[]string{"*"}, "br"},
		{[]string{"*;q=0"}, "identity"},
		{[]string{"gzip;q=0.2, *;q=0.5"}, "br"},
		{[]string{"GZIP"}, "gzip"},
		{[]string{"x-gzip"}, "gzip"},
		{[]string{"gzip", "br"}, "br"},
		{[]string{"br;q=2"}, "identity"},
		{[]string{"br;q=abc"}, "br"},
	}
	for _, tc := range tests {
		h := http.Header{"Accept-Encoding": tc.accept}
		if got := negotiateEncoding(h); got != tc.want {
			t.Errorf("negotiateEncoding(%q) = %q, want %q", tc.accept, got, tc.want)
		}
	}
}

func TestFieldValueIgnoresLayout(t *testing.T) {
	a := http.Header{"Accept-Language": {"en, fr"}}
	b := http.Header{"Accept-Language": {"en", "fr"}}
	c := http.Header{"Accept-Language": {"en,fr"}}
	if fieldValue(a, "Accept-Language") != fieldValue(b, "Accept-Language") || fieldValue(b, "Accept-Language") != fieldValue(c, "Accept-Language") {
		t.Errorf("fieldValue differs: %q %q %q", fieldValue(a, "Accept-Language"), fieldValue(b, "Accept-Language"), fieldValue(c, "Accept-Language"))
	}
}

// FuzzNormalisePath checks that normalising is idempotent and that the
// result is an absolute path.
func FuzzNormalisePath(f *testing.F) {
	for _, seed := range []string{"/", "/a/./b/../c", "/%7e%2f", "/..", "/a/..%2f", "", "/%", "/%zz", "//a//"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, p string) {
		once := normalisePath(p)
		if !strings.HasPrefix(once, "/") {
			t.Fatalf("normalisePath(%q) = %q, not absolute", p, once)
		}
		if twice := normalisePath(once); twice != once {
			t.Fatalf("normalisePath not idempotent: %q -> %q -> %q", p, once, twice)
		}
	})
}

// FuzzNegotiateEncoding checks that any Accept-Encoding picks one of the
// four codings the key uses.
func FuzzNegotiateEncoding(f *testing.F) {
	for _, seed := range []string{"gzip, br", "*;q=0", "br;q=0.5;q=1", ";;,,=", "zstd;Q=1.0"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		switch got := negotiateEncoding(http.Header{"Accept-Encoding": {s}}); got {
		case "br", "zstd", "gzip", "identity":
		default:
			t.Fatalf("negotiateEncoding(%q) = %q", s, got)
		}
	})
}
