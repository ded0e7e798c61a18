package route

import (
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/tidegate/tidegate/shared/config"
)

func mustTable(t testing.TB, routes []config.Route) *Table {
	t.Helper()
	tbl, err := New(routes)
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

func TestMatch(t *testing.T) {
	tbl := mustTable(t, []config.Route{
		{Name: "exact-path", Match: config.RouteMatch{Hosts: []string{"www.example.com"}, Path: "/login"}, Upstream: "auth"},
		{Name: "api", Match: config.RouteMatch{Hosts: []string{"*.example.com"}, PathPrefix: "/api/"}, Upstream: "api"},
		{Name: "regex", Match: config.RouteMatch{PathRegex: `^/v[0-9]+/items$`}, Upstream: "items"},
		{Name: "post-only", Match: config.RouteMatch{PathPrefix: "/upload", Methods: []string{"POST", "PUT"}}, Upstream: "upload"},
		{Name: "canary", Match: config.RouteMatch{Headers: map[string]string{"x-canary": "1"}}, Upstream: "canary"},
		{Name: "default", Upstream: "web"},
	})
	tests := []struct {
		name    string
		method  string
		host    string
		path    string
		headers map[string]string
		want    string
	}{
		{"exact path and host", "GET", "www.example.com", "/login", nil, "exact-path"},
		{"exact path wrong host", "GET", "other.com", "/login", nil, "default"},
		{"exact path is not a prefix", "GET", "www.example.com", "/login/x", nil, "default"},
		{"host with port and upper case", "GET", "WWW.Example.COM:8443", "/login", nil, "exact-path"},
		{"host with trailing dot", "GET", "www.example.com.", "/login", nil, "exact-path"},
		{"wildcard host and prefix", "GET", "a.example.com", "/api/users", nil, "api"},
		{"wildcard covers deeper names", "GET", "a.b.example.com", "/api/users", nil, "api"},
		{"wildcard excludes apex", "GET", "example.com", "/api/users", nil, "default"},
		{"first match wins in order", "GET", "www.example.com", "/api/login", nil, "api"},
		{"regex", "GET", "x", "/v2/items", nil, "regex"},
		{"regex anchored by author", "GET", "x", "/v2/items/1", nil, "default"},
		{"method matches", "PUT", "x", "/upload/a", nil, "post-only"},
		{"method does not match", "GET", "x", "/upload/a", nil, "default"},
		{"header matches", "GET", "x", "/", map[string]string{"X-Canary": "1"}, "canary"},
		{"header value differs", "GET", "x", "/", map[string]string{"X-Canary": "2"}, "default"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "http://placeholder"+tc.path, nil)
			r.Host = tc.host
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			got := tbl.Match(r)
			if got == nil || got.Name != tc.want {
				t.Errorf("Match(%s %s%s) = %v, want route %q", tc.method, tc.host, tc.path, got, tc.want)
			}
		})
	}
}

func TestMatchNoRoute(t *testing.T) {
	tbl := mustTable(t, []config.Route{
		{Name: "only", Match: config.RouteMatch{Hosts: []string{"a.test"}}, Upstream: "a"},
	})
	r := httptest.NewRequest("GET", "http://b.test/", nil)
	if got := tbl.Match(r); got != nil {
		t.Errorf("Match(b.test) = %q, want nil (404)", got.Name)
	}
}

func TestNormalizeHost(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Example.COM", "example.com"},
		{"example.com:443", "example.com"},
		{"example.com.", "example.com"},
		{"[::1]:8080", "::1"},
		{"[::1]", "::1"},
		{"10.0.0.1:80", "10.0.0.1"},
		{"", ""},
	}
	for _, tc := range tests {
		if got := NormalizeHost(tc.in); got != tc.want {
			t.Errorf("NormalizeHost(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// BenchmarkMatch measures a lookup that walks 50 host routes before it
// reaches a prefix route, the shape of a multi-tenant configuration.
func BenchmarkMatch(b *testing.B) {
	var routes []config.Route
	for i := range 50 {
		routes = append(routes, config.Route{
			Name:     fmt.Sprintf("tenant-%d", i),
			Match:    config.RouteMatch{Hosts: []string{fmt.Sprintf("t%d.example.com", i), fmt.Sprintf("*.t%d.example.net", i)}},
			Upstream: "u",
		})
	}
	routes = append(routes, config.Route{Name: "api", Match: config.RouteMatch{PathPrefix: "/api/", Methods: []string{"GET"}}, Upstream: "api"})
	tbl := mustTable(b, routes)
	r := httptest.NewRequest("GET", "http://www.example.org/api/users", nil)
	b.ReportAllocs()
	for b.Loop() {
		if tbl.Match(r) == nil {
			b.Fatal("no match")
		}
	}
}
