package route

import (
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/tidegate/tidegate/shared/config"
)

// benchTable returns ten routes: eight host and prefix routes, one regex
// route and a catch-all, in the order a typical configuration lists them.
func benchTable(b *testing.B) *Table {
	b.Helper()
	var routes []config.Route
	for i := range 8 {
		routes = append(routes, config.Route{
			Name:     fmt.Sprintf("site-%d", i),
			Match:    config.RouteMatch{Hosts: []string{fmt.Sprintf("site%d.example.com", i)}, PathPrefix: "/api/"},
			Upstream: "u",
		})
	}
	routes = append(routes,
		config.Route{Name: "assets", Match: config.RouteMatch{PathRegex: `^/assets/[a-f0-9]{8}\.js$`, Methods: []string{"GET", "HEAD"}}, Upstream: "u"},
		config.Route{Name: "default", Match: config.RouteMatch{PathPrefix: "/"}, Upstream: "u"},
	)
	t, err := New(routes)
	if err != nil {
		b.Fatal(err)
	}
	return t
}

func BenchmarkMatchOrder(b *testing.B) {
	t := benchTable(b)
	cases := []struct {
		name, url, want string
	}{
		{"first", "http://site0.example.com/api/users", "site-0"},
		{"eighth", "http://site7.example.com/api/users", "site-7"},
		{"regex", "http://www.example.com/assets/0123abcd.js", "assets"},
		{"fallthrough", "http://www.example.com/index.html", "default"},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			r := httptest.NewRequest("GET", tc.url, nil)
			b.ReportAllocs()
			for b.Loop() {
				rt := t.Match(r)
				if rt == nil || rt.Name != tc.want {
					b.Fatalf("Match(%s) = %v, want route %s", tc.url, rt, tc.want)
				}
			}
		})
	}
}
