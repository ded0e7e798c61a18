//go:build integration

package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestL7Protocols sends HTTP/1.1 with keep-alive and HTTP/2 over TLS through
// a PROXY listener, and HTTP/2 cleartext (h2c) through a second listener,
// and checks routing by host and path and round robin over two backends.
func TestL7Protocols(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSignedCert(t, dir, "www-", "www.example.test")
	web1, h1 := startEcho(t, "web1")
	web2, h2 := startEcho(t, "web2")
	api, _ := startEcho(t, "api")
	tlsAddr, h2cAddr := freeAddr(t), freeAddr(t)

	startL7(t, dir, fmt.Sprintf(`listeners:
  - name: tls
    address: %s
    proxy_protocol:
      trusted: ["127.0.0.1/32"]
    tls:
      certificates:
        - cert_file: %s
          key_file: %s
  - name: h2c
    address: %s
    h2c: true
routes:
  - name: api
    match:
      hosts: ["www.example.test"]
      path_prefix: /api/
    upstream: api
  - name: web
    upstream: web
upstreams:
  - name: web
    backends:
      - address: %s
      - address: %s
  - name: api
    backends:
      - address: %s
`, tlsAddr, certFile, keyFile, h2cAddr, web1, web2, api))

	t.Run("http1 keep-alive", func(t *testing.T) {
		var conns int
		tr := &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				conns++
				return dialL4(t, "", "198.51.100.7:40000", "")(ctx, network, addr)
			},
			TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "www.example.test", NextProtos: []string{"http/1.1"}},
		}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		backends := map[string]int{}
		for range 4 {
			resp, got := getEcho(t, c, newRequest(t, "GET", "https://"+tlsAddr+"/page", nil))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /page = %d, want 200", resp.StatusCode)
			}
			if resp.Proto != "HTTP/1.1" {
				t.Errorf("response proto = %s, want HTTP/1.1", resp.Proto)
			}
			backends[got.Backend]++
			if xff := got.Headers["X-Forwarded-For"]; len(xff) != 1 || xff[0] != "198.51.100.7" {
				t.Errorf("backend saw X-Forwarded-For %q, want [198.51.100.7]", xff)
			}
			if p := got.Headers["X-Forwarded-Proto"]; len(p) != 1 || p[0] != "https" {
				t.Errorf("backend saw X-Forwarded-Proto %q, want [https]", p)
			}
			if resp.Header.Get("X-Request-Id") == "" {
				t.Error("response has no X-Request-Id")
			}
		}
		if conns != 1 {
			t.Errorf("client opened %d connections for 4 requests, want 1 (keep-alive)", conns)
		}
		if backends["web1"] != 2 || backends["web2"] != 2 {
			t.Errorf("round robin spread = %v, want 2 requests on each of web1 and web2", backends)
		}
		if h1.Count() == 0 || h2.Count() == 0 {
			t.Errorf("backend counts web1=%d web2=%d, want both above 0", h1.Count(), h2.Count())
		}
	})

	t.Run("http2 over tls", func(t *testing.T) {
		c := l4Client(t, "198.51.100.8:40000", pool, "www.example.test")
		// The URL names the address, never a host name, so nothing
		// resolves names outside the test; Host and SNI carry the name.
		req := newRequest(t, "GET", "https://"+tlsAddr+"/api/users", nil)
		req.Host = "www.example.test"
		resp, got := getEcho(t, c, req)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /api/users = %d, want 200", resp.StatusCode)
		}
		if resp.Proto != "HTTP/2.0" {
			t.Errorf("response proto = %s, want HTTP/2.0", resp.Proto)
		}
		if got.Backend != "api" {
			t.Errorf("GET /api/users went to %q, want api (route by host and path prefix)", got.Backend)
		}
		if h := got.Headers["X-Forwarded-Host"]; len(h) != 1 || h[0] != "www.example.test" {
			t.Errorf("backend saw X-Forwarded-Host %q, want [www.example.test]", h)
		}
	})

	t.Run("h2c prior knowledge", func(t *testing.T) {
		tr := &http.Transport{Protocols: new(http.Protocols)}
		tr.Protocols.SetUnencryptedHTTP2(true)
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		resp, got := getEcho(t, c, newRequest(t, "GET", "http://"+h2cAddr+"/x", nil))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET over h2c = %d, want 200", resp.StatusCode)
		}
		if resp.Proto != "HTTP/2.0" {
			t.Errorf("h2c response proto = %s, want HTTP/2.0", resp.Proto)
		}
		if got.Backend != "web1" && got.Backend != "web2" {
			t.Errorf("h2c request went to %q, want web1 or web2", got.Backend)
		}
		if xff := got.Headers["X-Forwarded-For"]; len(xff) != 1 || xff[0] != "127.0.0.1" {
			t.Errorf("backend saw X-Forwarded-For %q, want [127.0.0.1] (no PROXY header on this listener)", xff)
		}
	})

	t.Run("unknown host falls to default route", func(t *testing.T) {
		c := l4Client(t, "198.51.100.9:40000", pool, "www.example.test")
		req := newRequest(t, "GET", "https://"+tlsAddr+"/api/users", nil)
		req.Host = "other.example.test"
		_, got := getEcho(t, c, req)
		if got.Backend != "web1" && got.Backend != "web2" {
			t.Errorf("request for other host went to %q, want the web route", got.Backend)
		}
	})
}

// TestL7ProxyHeaderTrust checks the PROXY rules: a trusted peer must send a
// header (also when it arrives split over TCP segments), an untrusted peer
// must not, and a silent peer does not hold up other connections.
func TestL7ProxyHeaderTrust(t *testing.T) {
	dir := t.TempDir()
	backend, _ := startEcho(t, "b")
	addr := freeAddr(t)
	logPath := filepath.Join(dir, "access.log")
	l7 := startL7(t, dir, fmt.Sprintf(`listeners:
  - name: edge
    address: %s
    proxy_protocol:
      trusted: ["127.0.0.1/32"]
      timeout: 1s
routes:
  - name: all
    upstream: b
upstreams:
  - name: b
    backends:
      - address: %s
access_log:
  path: %s
`, addr, backend, logPath))

	// roundTrip writes a raw HTTP/1.1 request on c and returns the status
	// line and body, or the read error.
	roundTrip := func(c net.Conn) (string, string, error) {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET /trust HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n"); err != nil {
			return "", "", err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return "", "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.Status, string(body), nil
	}
	dial := func(local string) net.Conn {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %s from %s: %v", addr, local, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	t.Run("trusted peer with header", func(t *testing.T) {
		c := dial("127.0.0.1")
		if _, err := c.Write(proxyHeader(t, "203.0.113.5:1234", c.RemoteAddr(), "conn-abc-1")); err != nil {
			t.Fatal(err)
		}
		status, body, err := roundTrip(c)
		if err != nil {
			t.Fatalf("request after PROXY header: %v", err)
		}
		if !strings.HasPrefix(status, "200") {
			t.Fatalf("status %s, want 200", status)
		}
		if !strings.Contains(body, `"203.0.113.5"`) {
			t.Errorf("backend response %s does not show client 203.0.113.5", body)
		}
	})

	t.Run("trusted peer header split across segments", func(t *testing.T) {
		c := dial("127.0.0.1")
		hdr := proxyHeader(t, "203.0.113.6:1234", c.RemoteAddr(), "")
		for _, part := range [][]byte{hdr[:5], hdr[5:17], hdr[17:]} {
			if _, err := c.Write(part); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		status, body, err := roundTrip(c)
		if err != nil {
			t.Fatalf("request after split PROXY header: %v", err)
		}
		if !strings.HasPrefix(status, "200") || !strings.Contains(body, `"203.0.113.6"`) {
			t.Errorf("status %s body %s, want 200 with client 203.0.113.6", status, body)
		}
	})

	t.Run("trusted peer with v1 header", func(t *testing.T) {
		c := dial("127.0.0.1")
		if _, err := io.WriteString(c, "PROXY TCP4 203.0.113.12 127.0.0.1 1234 80\r\n"); err != nil {
			t.Fatal(err)
		}
		status, body, err := roundTrip(c)
		if err != nil {
			t.Fatalf("request after PROXY v1 header: %v", err)
		}
		if !strings.HasPrefix(status, "200") || !strings.Contains(body, `"203.0.113.12"`) {
			t.Errorf("status %s body %s, want 200 with client 203.0.113.12", status, body)
		}
	})

	t.Run("trusted peer with malformed v2 header", func(t *testing.T) {
		c := dial("127.0.0.1")
		hdr := proxyHeader(t, "203.0.113.13:1234", c.RemoteAddr(), "")
		hdr[12] = 0x31 // version 3 does not exist
		if _, err := c.Write(hdr); err != nil {
			t.Fatal(err)
		}
		if status, _, err := roundTrip(c); err == nil {
			t.Errorf("malformed PROXY header got %s, want the connection closed", status)
		}
	})

	t.Run("trusted peer without header", func(t *testing.T) {
		c := dial("127.0.0.1")
		if status, _, err := roundTrip(c); err == nil {
			t.Errorf("request without PROXY header from trusted peer got %s, want the connection closed", status)
		}
	})

	t.Run("untrusted peer with header", func(t *testing.T) {
		c := dial("127.0.0.2")
		if _, err := c.Write(proxyHeader(t, "203.0.113.7:1234", c.RemoteAddr(), "")); err != nil {
			t.Fatal(err)
		}
		if status, _, err := roundTrip(c); err == nil {
			t.Errorf("PROXY header from untrusted 127.0.0.2 got %s, want the connection closed", status)
		}
	})

	t.Run("untrusted peer without header", func(t *testing.T) {
		c := dial("127.0.0.2")
		status, body, err := roundTrip(c)
		if err != nil {
			t.Fatalf("plain request from 127.0.0.2: %v", err)
		}
		if !strings.HasPrefix(status, "200") || !strings.Contains(body, `"127.0.0.2"`) {
			t.Errorf("status %s body %s, want 200 with client 127.0.0.2", status, body)
		}
	})

	t.Run("silent peer does not block accepts", func(t *testing.T) {
		silent := dial("127.0.0.1")
		_ = silent
		c := dial("127.0.0.1")
		if _, err := c.Write(proxyHeader(t, "203.0.113.8:1234", c.RemoteAddr(), "")); err != nil {
			t.Fatal(err)
		}
		if status, _, err := roundTrip(c); err != nil || !strings.HasPrefix(status, "200") {
			t.Fatalf("request while another peer stays silent: status %q err %v, want 200", status, err)
		}
		// The silent peer is closed once the header timeout passes.
		_ = silent.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := silent.Read(make([]byte, 1)); err == nil {
			t.Error("silent peer's connection still open after the header timeout")
		}
	})

	t.Run("rejections counted", func(t *testing.T) {
		for _, reason := range []string{"missing", "untrusted_sender", "invalid"} {
			series := fmt.Sprintf(`tidegate_l7_proxy_header_errors_total{listener="edge",reason=%q}`, reason)
			if v, ok := metricValue(t, l7.admin, series); !ok || v < 1 {
				t.Errorf("%s = %v (found %v), want at least 1", series, v, ok)
			}
		}
	})

	t.Run("unique id in access log", func(t *testing.T) {
		eventually(t, 5*time.Second, "access log line with conn_id conn-abc-1", func() bool {
			for _, l := range accessLogLines(t, logPath) {
				if l["conn_id"] == "conn-abc-1" && l["client_addr"] == "203.0.113.5" {
					return true
				}
			}
			return false
		})
	})
}

// TestL7ForwardingHeaders checks that a client cannot forge the forwarding
// headers the backend receives, and that a trusted forwarder's chain is
// extended.
func TestL7ForwardingHeaders(t *testing.T) {
	dir := t.TempDir()
	backend, _ := startEcho(t, "b")
	addr := freeAddr(t)
	startL7(t, dir, fmt.Sprintf(`listeners:
  - name: edge
    address: %s
    proxy_protocol:
      trusted: ["127.0.0.1/32"]
    trusted_forwarders: ["192.0.2.0/24"]
routes:
  - name: all
    upstream: b
upstreams:
  - name: b
    backends:
      - address: %s
`, addr, backend))

	forged := func(req *http.Request) {
		req.Header.Set("X-Forwarded-For", "1.2.3.4")
		req.Header.Set("X-Real-IP", "1.2.3.4")
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("X-Forwarded-Host", "evil.test")
		req.Header.Set("X-Forwarded-Port", "1")
		req.Header.Set("Forwarded", "for=1.2.3.4")
	}
	want := func(t *testing.T, got map[string][]string, name, value string) {
		t.Helper()
		if v := got[name]; len(v) != 1 || v[0] != value {
			t.Errorf("backend saw %s %q, want [%s]", name, v, value)
		}
	}

	t.Run("untrusted client forges headers", func(t *testing.T) {
		c := l4Client(t, "203.0.113.9:5555", nil, "")
		req := newRequest(t, "GET", "http://"+addr+"/", nil)
		req.Host = "shop.test"
		forged(req)
		_, got := getEcho(t, c, req)
		want(t, got.Headers, "X-Forwarded-For", "203.0.113.9")
		want(t, got.Headers, "X-Real-Ip", "203.0.113.9")
		want(t, got.Headers, "X-Forwarded-Proto", "http")
		want(t, got.Headers, "X-Forwarded-Host", "shop.test")
		_, port, _ := net.SplitHostPort(addr)
		want(t, got.Headers, "X-Forwarded-Port", port)
		want(t, got.Headers, "Forwarded", "for=203.0.113.9;host=shop.test;proto=http")
	})

	t.Run("untrusted client names header in Connection", func(t *testing.T) {
		c := l4Client(t, "203.0.113.10:5555", nil, "")
		req := newRequest(t, "GET", "http://"+addr+"/", nil)
		forged(req)
		req.Header.Set("Connection", "X-Forwarded-For, X-Real-IP")
		_, got := getEcho(t, c, req)
		want(t, got.Headers, "X-Forwarded-For", "203.0.113.10")
		want(t, got.Headers, "X-Real-Ip", "203.0.113.10")
		if _, ok := got.Headers["Connection"]; ok {
			t.Errorf("backend saw hop-by-hop Connection header %q", got.Headers["Connection"])
		}
	})

	t.Run("trusted forwarder chain kept", func(t *testing.T) {
		c := l4Client(t, "192.0.2.50:5555", nil, "")
		req := newRequest(t, "GET", "http://"+addr+"/", nil)
		req.Host = "shop.test"
		req.Header.Set("X-Forwarded-For", "1.2.3.4")
		req.Header.Set("Forwarded", "for=1.2.3.4;proto=https")
		_, got := getEcho(t, c, req)
		want(t, got.Headers, "X-Forwarded-For", "1.2.3.4, 192.0.2.50")
		want(t, got.Headers, "Forwarded", "for=1.2.3.4;proto=https, for=192.0.2.50;host=shop.test;proto=http")
	})

	t.Run("request id kept or generated", func(t *testing.T) {
		c := l4Client(t, "203.0.113.11:5555", nil, "")
		req := newRequest(t, "GET", "http://"+addr+"/", nil)
		req.Header.Set("X-Request-Id", "abc-123")
		resp, got := getEcho(t, c, req)
		want(t, got.Headers, "X-Request-Id", "abc-123")
		if v := resp.Header.Values("X-Request-Id"); len(v) != 1 || v[0] != "abc-123" {
			t.Errorf("response X-Request-Id = %q, want [abc-123]", v)
		}
		resp, got = getEcho(t, c, newRequest(t, "GET", "http://"+addr+"/", nil))
		gen := resp.Header.Get("X-Request-Id")
		if gen == "" {
			t.Fatal("no X-Request-Id generated")
		}
		want(t, got.Headers, "X-Request-Id", gen)
	})
}
