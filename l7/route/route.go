// Package route matches HTTP requests to the routes of an L7 configuration.
// A request goes to the first route, in configuration order, whose
// conditions (host, path, method, headers) it all meets.
package route

import (
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"

	"github.com/tidegate/tidegate/shared/config"
)

// Route is one compiled route. It is immutable and safe for concurrent use.
type Route struct {
	// Name and Upstream come from the configuration.
	Name     string
	Upstream string
	// Index is the position of the route in the configuration.
	Index int

	exactHosts  []string // lower case, no trailing dot
	suffixHosts []string // ".example.com" for "*.example.com"
	path        string
	pathPrefix  string
	pathRegex   *regexp.Regexp
	methods     []string
	headers     []headerMatch
}

type headerMatch struct {
	name  string // canonical form
	value string
}

// Table is an ordered list of routes. It is immutable and safe for
// concurrent use.
type Table struct {
	routes []*Route
}

// New compiles routes. The configuration was validated already, so an error
// here means a caller skipped validation.
func New(routes []config.Route) (*Table, error) {
	t := &Table{routes: make([]*Route, 0, len(routes))}
	for i, rc := range routes {
		r, err := compile(i, rc)
		if err != nil {
			return nil, err
		}
		t.routes = append(t.routes, r)
	}
	return t, nil
}

func compile(i int, rc config.Route) (*Route, error) {
	r := &Route{
		Name:       rc.Name,
		Upstream:   rc.Upstream,
		Index:      i,
		path:       rc.Match.Path,
		pathPrefix: rc.Match.PathPrefix,
		methods:    rc.Match.Methods,
	}
	for _, h := range rc.Match.Hosts {
		h = NormalizeHost(h)
		if suffix, ok := strings.CutPrefix(h, "*"); ok {
			r.suffixHosts = append(r.suffixHosts, suffix)
		} else {
			r.exactHosts = append(r.exactHosts, h)
		}
	}
	if rc.Match.PathRegex != "" {
		re, err := regexp.Compile(rc.Match.PathRegex)
		if err != nil {
			return nil, fmt.Errorf("route %q: compile path_regex: %w", rc.Name, err)
		}
		r.pathRegex = re
	}
	for name, value := range rc.Match.Headers {
		r.headers = append(r.headers, headerMatch{name: http.CanonicalHeaderKey(name), value: value})
	}
	return r, nil
}

// Routes returns the routes in configuration order.
func (t *Table) Routes() []*Route { return t.routes }

// Match returns the first route that r meets, or nil when none does, in
// which case the caller responds with 404.
func (t *Table) Match(r *http.Request) *Route {
	return t.MatchParts(r.Host, r.URL.Path, r.Method, func(name string) []string { return r.Header[name] })
}

// MatchParts is [Table.Match] for a request that is not an *http.Request:
// host is the Host header, path the decoded path, and values returns the
// values of the header with the given canonical name. values is called only
// for routes that match on headers.
func (t *Table) MatchParts(host, path, method string, values func(name string) []string) *Route {
	host = NormalizeHost(host)
	for _, rt := range t.routes {
		if rt.matches(host, path, method, values) {
			return rt
		}
	}
	return nil
}

func (rt *Route) matches(host, path, method string, values func(string) []string) bool {
	if !rt.matchHost(host) {
		return false
	}
	switch {
	case rt.path != "" && path != rt.path:
		return false
	case rt.pathPrefix != "" && !strings.HasPrefix(path, rt.pathPrefix):
		return false
	case rt.pathRegex != nil && !rt.pathRegex.MatchString(path):
		return false
	}
	if len(rt.methods) > 0 && !contains(rt.methods, method) {
		return false
	}
	for _, h := range rt.headers {
		if !contains(values(h.name), h.value) {
			return false
		}
	}
	return true
}

func (rt *Route) matchHost(host string) bool {
	if len(rt.exactHosts) == 0 && len(rt.suffixHosts) == 0 {
		return true
	}
	for _, h := range rt.exactHosts {
		if h == host {
			return true
		}
	}
	for _, s := range rt.suffixHosts {
		// "*.example.com" needs at least one label before the suffix, so
		// it does not match "example.com" itself.
		if len(host) > len(s) && strings.HasSuffix(host, s) {
			return true
		}
	}
	return false
}

func contains(list []string, v string) bool {
	for _, s := range list {
		if s == v {
			return true
		}
	}
	return false
}

// NormalizeHost returns the host of a Host header or server name in the form
// routes and certificates compare: lower case, without port and without a
// trailing dot. IPv6 literals lose their brackets.
func NormalizeHost(h string) string {
	// Only a Host with a port or an IPv6 literal contains a colon, and
	// SplitHostPort allocates its error, so the common case skips it.
	if strings.IndexByte(h, ':') >= 0 {
		if host, _, err := net.SplitHostPort(h); err == nil {
			h = host
		} else if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
			h = h[1 : len(h)-1]
		}
	}
	h = strings.TrimSuffix(h, ".")
	for i := 0; i < len(h); i++ {
		if 'A' <= h[i] && h[i] <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}
