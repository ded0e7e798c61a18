//go:build integration

package integration

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/tidegate/tidegate/shared/echo"
)

// twoTier is an L4, two L7 nodes and three backends, all real tidegate
// processes on 127.0.0.1.
type twoTier struct {
	vip        string
	l4, l7     []*proc
	l7Addrs    []string
	l7Admins   []string
	l7Configs  []string
	l4Admin    string
	backends   []*proc
	certPool   *x509.CertPool
	clientAddr netip.Addr
}

const skeletonL7 = `
admin: {address: %q}
drain_timeout: 5s
l7:
  listeners:
    - name: https
      address: %q
      proxy_protocol: {trusted: [127.0.0.1/32], timeout: 2s}
      tls:
        certificates: [{cert_file: %q, key_file: %q}]
  routes:
    - {name: all, match: {path_prefix: /}, upstream: echo}
  upstreams:
    - name: echo
      backends:
%s
`

const skeletonL4 = `
admin: {address: %q}
drain_timeout: 5s
l4:
  vips:
    - name: https
      address: %q
      health_check: {type: http, path: /readyz, interval: 500ms, timeout: 400ms, rise: 1, fall: 2}
      reals:
%s
`

func startTwoTier(t *testing.T) *twoTier {
	t.Helper()
	dir := t.TempDir()
	tt := &twoTier{clientAddr: netip.MustParseAddr("127.0.0.2")}
	certFile, keyFile, pool := selfSignedCert(t, dir, "", "localhost", "127.0.0.1")
	tt.certPool = pool

	var backendLines []string
	for i := range 3 {
		addr := freeAddr(t)
		p := startTidegate(t, fmt.Sprintf("backend-%d", i+1), "backend", "--listen", addr, "--name", fmt.Sprintf("backend-%d", i+1))
		tt.backends = append(tt.backends, p)
		backendLines = append(backendLines, fmt.Sprintf("        - address: %q", addr))
		waitHTTP(t, "http://"+addr+"/", http.StatusOK, 10*time.Second)
	}

	var realLines []string
	for i := range 2 {
		admin, data := freeAddr(t), freeAddr(t)
		cfg := writeFile(t, dir, fmt.Sprintf("l7-%d.yaml", i+1),
			fmt.Sprintf(skeletonL7, admin, data, certFile, keyFile, strings.Join(backendLines, "\n")))
		tt.l7 = append(tt.l7, startTidegate(t, fmt.Sprintf("l7-%d", i+1), "l7", "--config", cfg))
		tt.l7Addrs = append(tt.l7Addrs, data)
		tt.l7Admins = append(tt.l7Admins, admin)
		tt.l7Configs = append(tt.l7Configs, cfg)
		realLines = append(realLines, fmt.Sprintf("        - {address: %q, health_address: %q}", data, admin))
	}
	for _, a := range tt.l7Admins {
		waitReady(t, a)
	}

	tt.l4Admin, tt.vip = freeAddr(t), freeAddr(t)
	cfg := writeFile(t, dir, "l4.yaml", fmt.Sprintf(skeletonL4, tt.l4Admin, tt.vip, strings.Join(realLines, "\n")))
	tt.l4 = append(tt.l4, startTidegate(t, "l4", "l4", "--config", cfg))
	waitReady(t, tt.l4Admin)
	return tt
}

// client returns an HTTPS client that connects from 127.0.0.2, so the
// client's address differs from the L4's 127.0.0.1, and opens a new
// connection per request so Maglev hashes many flows.
func (tt *twoTier) client() *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: tt.clientAddr.AsSlice()}, Timeout: 3 * time.Second}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext:       d.DialContext,
			TLSClientConfig:   &tls.Config{RootCAs: tt.certPool, ServerName: "localhost"},
			DisableKeepAlives: true,
		},
	}
}

func (tt *twoTier) get(t *testing.T, c *http.Client, path string) (echo.Request, error) {
	t.Helper()
	resp, err := c.Get("https://" + tt.vip + path)
	if err != nil {
		return echo.Request{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return echo.Request{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return echo.Request{}, fmt.Errorf("GET %s: status %s: %s", path, resp.Status, body)
	}
	var rep echo.Request
	if err := json.Unmarshal(body, &rep); err != nil {
		return echo.Request{}, fmt.Errorf("GET %s: decode echo: %w: %s", path, err, body)
	}
	return rep, nil
}

func TestTwoTierForwardsRealClientAddress(t *testing.T) {
	tt := startTwoTier(t)
	c := tt.client()

	const n = 60
	perBackend := map[string]int{}
	for i := range n {
		path := fmt.Sprintf("/spread/%d", i)
		rep, err := tt.get(t, c, path)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if got := rep.Headers["X-Forwarded-For"]; len(got) != 1 || got[0] != tt.clientAddr.String() {
			t.Fatalf("backend saw X-Forwarded-For %q, want %q", got, tt.clientAddr)
		}
		if got := rep.Headers["X-Real-Ip"]; len(got) != 1 || got[0] != tt.clientAddr.String() {
			t.Fatalf("backend saw X-Real-IP %q, want %q", got, tt.clientAddr)
		}
		if got := rep.Headers["X-Forwarded-Proto"]; len(got) != 1 || got[0] != "https" {
			t.Fatalf("backend saw X-Forwarded-Proto %q, want https", got)
		}
		if got := rep.Headers["X-Forwarded-Host"]; len(got) != 1 || got[0] != tt.vip {
			t.Fatalf("backend saw X-Forwarded-Host %q, want %q", got, tt.vip)
		}
		perBackend[rep.Backend]++
	}
	if len(perBackend) != 3 {
		t.Errorf("requests reached backends %v, want all three", perBackend)
	}

	// Each L7 logs the paths it served in its access log.
	for i, p := range tt.l7 {
		served := strings.Count(p.out.String(), "/spread/")
		if served == 0 {
			t.Errorf("L7 node %d served none of the %d requests", i+1, n)
		}
		t.Logf("L7 node %d served %d of %d requests", i+1, served, n)
	}
}

func TestTwoTierRejectsUntrustedProxyHeader(t *testing.T) {
	tt := startTwoTier(t)

	// A client at 127.0.0.3 claims to be 203.0.113.9 with its own PROXY
	// header, straight to an L7 node. Only 127.0.0.1 is trusted there.
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}, Timeout: 3 * time.Second}
	conn, err := d.Dial("tcp", tt.l7Addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hdr := proxyproto.HeaderProxyFromAddrs(2,
		&net.TCPAddr{IP: net.ParseIP("203.0.113.9"), Port: 4444},
		&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 443})
	if _, err := hdr.WriteTo(conn); err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(conn, &tls.Config{RootCAs: tt.certPool, ServerName: "localhost"})
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err == nil {
		req := "GET /spoof HTTP/1.1\r\nHost: localhost\r\n\r\n"
		if _, err := tc.Write([]byte(req)); err == nil {
			buf := make([]byte, 4096)
			n, _ := tc.Read(buf)
			if strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
				t.Fatalf("an untrusted PROXY header was accepted: %q", buf[:n])
			}
		}
	}
	for _, b := range tt.backends {
		if strings.Contains(b.out.String(), "203.0.113.9") {
			t.Fatal("a backend saw the spoofed address")
		}
	}
}

func TestTwoTierBrokenReloadKeepsServing(t *testing.T) {
	tt := startTwoTier(t)
	c := tt.client()

	writeFile(t, "", tt.l7Configs[0], "l7:\n  listeners: [{name: x, address: nowhere}]\n  bogus: true\n")
	if err := tt.l7[0].signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(tt.l7[0].out.String(), "reload rejected") {
		if time.Now().After(deadline) {
			t.Fatal("the L7 did not log the rejected reload")
		}
		time.Sleep(50 * time.Millisecond)
	}

	for i := range 30 {
		if _, err := tt.get(t, c, fmt.Sprintf("/after-reload/%d", i)); err != nil {
			t.Fatalf("request %d after a broken reload: %v", i, err)
		}
	}
	if tt.l7[0].exited() {
		t.Fatal("the L7 exited after a broken reload")
	}
	if served := strings.Count(tt.l7[0].out.String(), "/after-reload/"); served == 0 {
		t.Error("the L7 with the broken config served no requests after the reload")
	}
}
