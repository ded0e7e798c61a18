//go:build integration

package integration

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const rewriteL7 = `
listeners:
  - name: edge
    address: %s
    proxy_protocol: {trusted: [127.0.0.1/32], timeout: 2s}
    policy:
      rewrite:
        response_headers:
          set: {X-Listener-Default: "edge"}
  - name: second
    address: %s
    proxy_protocol: {trusted: [127.0.0.1/32], timeout: 2s}
routes:
  - name: api
    match: {path_prefix: /api/}
    upstream: echo
    policy:
      rewrite:
        path: {replace_prefix: {from: /api, to: /v2}}
        request_headers:
          set: {X-Route: "${route}", X-Request-Uri: "${request_uri}"}
          add: {X-Client: "${client_ip}"}
          remove: [X-Remove-Me]
        response_headers:
          set: {X-Served-By: tidegate}
          remove: [X-Backend]
  - name: items
    match: {path_regex: "^/items/[0-9]+$"}
    upstream: echo
    policy:
      rewrite:
        path: {regex: {pattern: "^/items/([0-9]+)$", replacement: "/catalog/$1/detail"}}
  - name: strip
    match: {path_prefix: /strip/}
    upstream: echo
    policy:
      rewrite:
        path: {strip_prefix: /strip}
  - name: old
    match: {path_prefix: /old/}
    upstream: echo
    policy:
      rewrite:
        redirect: {status: 308, location: "https://${hostname}/new${request_uri}"}
  - name: maintenance
    match: {path: /maintenance}
    upstream: echo
    policy:
      rewrite:
        fixed_response:
          status: 503
          headers: {Retry-After: "120", Content-Type: text/plain}
          body: "down for maintenance\n"
  - name: admin
    match: {path_prefix: /admin/}
    upstream: echo
    policy:
      access: {deny: [203.0.113.0/24]}
  - name: internal
    match: {path_prefix: /internal/}
    upstream: echo
    policy:
      access: {allow: [10.0.0.0/8, 192.0.2.0/24]}
  - name: readonly
    match: {path_prefix: /ro/}
    upstream: echo
    policy:
      access: {methods: [GET]}
  - name: default
    upstream: echo
upstreams:
  - name: echo
    backends:
      - address: %s
access_log:
  path: %s
`

// TestL7PolicyRewriteAndAccess drives the real binary through routes with
// path rewrites, header rules, a redirect, a fixed response and access
// rules, and checks what the echo backend received and what the client got.
func TestL7PolicyRewriteAndAccess(t *testing.T) {
	dir := t.TempDir()
	backendAddr, backend := startEcho(t, "echo")
	edge, second := freeAddr(t), freeAddr(t)
	logPath := filepath.Join(dir, "access.log")
	startL7(t, dir, fmt.Sprintf(rewriteL7, edge, second, backendAddr, logPath))

	// Clients claim their address in a PROXY header, as the L4 would.
	denied := l4Client(t, "203.0.113.7:40000", nil, "")
	allowed := l4Client(t, "192.0.2.10:40000", nil, "")
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	denied.CheckRedirect, allowed.CheckRedirect = noRedirect, noRedirect
	base := "http://" + edge

	t.Run("prefix rewrite and header rules", func(t *testing.T) {
		req := newRequest(t, http.MethodGet, base+"/api/users?page=2", nil)
		req.Host = "shop.example.test"
		req.Header.Set("X-Remove-Me", "secret")
		req.Header.Set("X-Route", "client-supplied")

		resp, got := getEcho(t, denied, req)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200", resp.StatusCode)
		}
		if got.URI != "/v2/users?page=2" {
			t.Errorf("backend URI %q, want /v2/users?page=2", got.URI)
		}
		checkHeader := func(name, want string) {
			t.Helper()
			if v := strings.Join(got.Headers[name], ","); v != want {
				t.Errorf("backend header %s = %q, want %q", name, v, want)
			}
		}
		checkHeader("X-Route", "api")
		// Header rules run after the path rewrite, so they see the new path.
		checkHeader("X-Request-Uri", "/v2/users?page=2")
		checkHeader("X-Client", "203.0.113.7")
		checkHeader("X-Remove-Me", "")

		if v := resp.Header.Get("X-Served-By"); v != "tidegate" {
			t.Errorf("response X-Served-By %q, want tidegate", v)
		}
		if v := resp.Header.Get("X-Backend"); v != "" {
			t.Errorf("response X-Backend %q, want it removed", v)
		}
		// The route's rewrite section replaces the listener's, so the
		// listener's default header is absent here.
		if v := resp.Header.Get("X-Listener-Default"); v != "" {
			t.Errorf("route with its own rewrite got X-Listener-Default %q", v)
		}
	})

	t.Run("regex rewrite", func(t *testing.T) {
		resp, got := getEcho(t, allowed, newRequest(t, http.MethodGet, base+"/items/42?x=1", nil))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200", resp.StatusCode)
		}
		if got.URI != "/catalog/42/detail?x=1" {
			t.Errorf("backend URI %q, want /catalog/42/detail?x=1", got.URI)
		}
	})

	t.Run("strip prefix", func(t *testing.T) {
		resp, got := getEcho(t, allowed, newRequest(t, http.MethodGet, base+"/strip/a/b", nil))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200", resp.StatusCode)
		}
		if got.URI != "/a/b" {
			t.Errorf("backend URI %q, want /a/b", got.URI)
		}
	})

	t.Run("listener default policy", func(t *testing.T) {
		resp, _ := getEcho(t, allowed, newRequest(t, http.MethodGet, base+"/plain", nil))
		if v := resp.Header.Get("X-Listener-Default"); v != "edge" {
			t.Errorf("X-Listener-Default %q on listener edge, want edge", v)
		}
		other := l4Client(t, "192.0.2.10:40001", nil, "")
		resp, _ = getEcho(t, other, newRequest(t, http.MethodGet, "http://"+second+"/plain", nil))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("listener second: status %d, want 200", resp.StatusCode)
		}
		if v := resp.Header.Get("X-Listener-Default"); v != "" {
			t.Errorf("listener second got X-Listener-Default %q, want none", v)
		}
	})

	servedBefore := backend.Count()
	t.Run("redirect", func(t *testing.T) {
		req := newRequest(t, http.MethodGet, base+"/old/page?id=7", nil)
		req.Host = "shop.example.test:8080"
		resp, err := allowed.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusPermanentRedirect {
			t.Errorf("status %d, want 308", resp.StatusCode)
		}
		if loc := resp.Header.Get("Location"); loc != "https://shop.example.test/new/old/page?id=7" {
			t.Errorf("Location %q, want https://shop.example.test/new/old/page?id=7", loc)
		}
	})

	t.Run("fixed response", func(t *testing.T) {
		resp, err := allowed.Get(base + "/maintenance")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("status %d, want 503", resp.StatusCode)
		}
		if string(body) != "down for maintenance\n" {
			t.Errorf("body %q, want the configured one", body)
		}
		if v := resp.Header.Get("Retry-After"); v != "120" {
			t.Errorf("Retry-After %q, want 120", v)
		}
	})

	statusOf := func(t *testing.T, c *http.Client, method, path string) *http.Response {
		t.Helper()
		resp, err := c.Do(newRequest(t, method, base+path, nil))
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	t.Run("deny list", func(t *testing.T) {
		if resp := statusOf(t, denied, http.MethodGet, "/admin/x"); resp.StatusCode != http.StatusForbidden {
			t.Errorf("203.0.113.7 on a route denying 203.0.113.0/24: status %d, want 403", resp.StatusCode)
		}
	})
	t.Run("allow list", func(t *testing.T) {
		if resp := statusOf(t, denied, http.MethodGet, "/internal/x"); resp.StatusCode != http.StatusForbidden {
			t.Errorf("203.0.113.7 outside the allow list: status %d, want 403", resp.StatusCode)
		}
	})
	t.Run("method not allowed", func(t *testing.T) {
		resp := statusOf(t, allowed, http.MethodPost, "/ro/x")
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST on a GET-only route: status %d, want 405", resp.StatusCode)
		}
		if allow := resp.Header.Get("Allow"); allow != "GET, HEAD" {
			t.Errorf("Allow %q, want \"GET, HEAD\"", allow)
		}
	})
	if n := backend.Count() - servedBefore; n != 0 {
		t.Errorf("backend served %d requests for redirects, fixed responses and rejections, want 0", n)
	}

	// The same routes forward requests the rules let through.
	for _, tc := range []struct {
		client *http.Client
		path   string
	}{{allowed, "/admin/x"}, {allowed, "/internal/x"}, {allowed, "/ro/x"}} {
		if resp := statusOf(t, tc.client, http.MethodGet, tc.path); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s from 192.0.2.10: status %d, want 200", tc.path, resp.StatusCode)
		}
	}

	eventually(t, 5*time.Second, "access log lines for the policy decisions", func() bool {
		return len(accessLogLines(t, logPath)) >= 12
	})
	fields := map[string]map[string]any{}
	for _, line := range accessLogLines(t, logPath) {
		fields[fmt.Sprint(line["route"])] = line
	}
	if v := fields["api"]["rewrite_path"]; v != "/v2/users" {
		t.Errorf("access log rewrite_path for api = %v, want /v2/users", v)
	}
	if v := fields["old"]["redirect_location"]; v != "https://shop.example.test/new/old/page?id=7" {
		t.Errorf("access log redirect_location for old = %v", v)
	}
	if v := fields["maintenance"]["fixed_response"]; v != float64(503) {
		t.Errorf("access log fixed_response for maintenance = %v, want 503", v)
	}
}
