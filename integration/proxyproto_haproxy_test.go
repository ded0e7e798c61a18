//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tidegate/tidegate/shared/echo"
)

// The tests in this file check PROXY protocol headers against HAProxy,
// whose authors wrote the specification: HAProxy's headers must parse in
// the L7, and the L4's headers must parse in HAProxy.

// clientSource is the loopback address the test clients connect from. It
// differs from 127.0.0.1, where every proxy connects from, so an address a
// peer reports as the client's can only have come from a PROXY header.
const clientSource = "127.0.0.77"

// haproxyPath returns the HAProxy binary. Without it the test skips,
// except under CI=true, where it fails: install the Debian package
// "haproxy".
func haproxyPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("haproxy"); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("haproxy not found: install the Debian package haproxy (apt-get install -y haproxy)")
	}
	t.Skip("haproxy not found; install the Debian package haproxy to run this test")
	return ""
}

// startHAProxy checks cfg with haproxy -c and runs it in the foreground.
func startHAProxy(t *testing.T, cfg string) {
	t.Helper()
	bin := haproxyPath(t)
	path := writeFile(t, t.TempDir(), "haproxy.cfg", cfg)
	if out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	startCommand(t, "haproxy", exec.Command(bin, "-db", "-f", path))
}

// TestHAProxyHeadersToL7 puts HAProxy "mode tcp" in front of the L7, once
// with send-proxy-v2 and a CRC32c checksum TLV and once with send-proxy
// (v1). The backend must see the test client's address in
// X-Forwarded-For, which the L7 can only know from HAProxy's header.
func TestHAProxyHeadersToL7(t *testing.T) {
	dir := t.TempDir()
	backend, _ := startEcho(t, "b")
	l7Addr := freeAddr(t)
	startL7(t, dir, fmt.Sprintf(`listeners:
  - name: pp
    address: %s
    proxy_protocol:
      trusted: ["127.0.0.1/32"]
routes:
  - name: all
    upstream: b
upstreams:
  - name: b
    backends:
      - address: %s
`, l7Addr, backend))

	v2Addr, v1Addr := freeAddr(t), freeAddr(t)
	startHAProxy(t, fmt.Sprintf(`global
    nbthread 1
defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend v2
    bind %s
    default_backend l7v2
frontend v1
    bind %s
    default_backend l7v1
backend l7v2
    server l7 %s send-proxy-v2 proxy-v2-options crc32c
backend l7v1
    server l7 %s send-proxy
`, v2Addr, v1Addr, l7Addr, l7Addr))

	c := clientFrom(clientSource)
	for _, tc := range []struct{ name, addr string }{{"v2 with crc32c", v2Addr}, {"v1", v1Addr}} {
		t.Run(tc.name, func(t *testing.T) {
			var resp *http.Response
			var got echo.Request
			// HAProxy may take a moment to bind after it starts.
			eventually(t, 10*time.Second, "a response through HAProxy", func() bool {
				r, err := c.Get("http://" + tc.addr + "/pp")
				if err != nil {
					return false
				}
				resp = r
				return true
			})
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				body, _ := io.ReadAll(resp.Body)
				t.Fatalf("GET through HAProxy = %d %q, want 200", resp.StatusCode, body)
			}
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatalf("decode the echo: %v", err)
			}
			if xff := strings.Join(got.Headers["X-Forwarded-For"], ","); xff != clientSource {
				t.Errorf("X-Forwarded-For at the backend = %q, want %q", xff, clientSource)
			}
		})
	}
}

// TestL4HeadersToHAProxy puts the L4 in front of HAProxy "mode http" with
// accept-proxy, which responds with the client address it parsed and, for
// v2, the UNIQUE_ID TLV.
func TestL4HeadersToHAProxy(t *testing.T) {
	realAddr := freeAddr(t)
	startHAProxy(t, fmt.Sprintf(`global
    nbthread 1
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend pp
    bind %s accept-proxy
    http-request return status 200 content-type text/plain lf-string "src=%%[src] id=%%[fc_pp_unique_id,hex]"
`, realAddr))

	for _, version := range []string{"v2", "v1"} {
		t.Run(version, func(t *testing.T) {
			vip := freeAddr(t)
			startL4(t, fmt.Sprintf(`admin: {address: "{{ADMIN}}"}
l4:
  dataplane: {mode: userspace}
  vips:
    - name: web
      address: %q
      proxy_protocol: %s
      reals:
        - {address: %q}
`, vip, version, realAddr))

			c := clientFrom(clientSource)
			var body string
			eventually(t, 10*time.Second, "a response through the L4 and HAProxy", func() bool {
				resp, err := c.Get("http://" + vip + "/")
				if err != nil {
					return false
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				body = string(b)
				return err == nil && resp.StatusCode == http.StatusOK
			})
			t.Logf("HAProxy saw: %s", body)
			if !strings.HasPrefix(body, "src="+clientSource+" ") {
				t.Errorf("HAProxy parsed %q, want src=%s", body, clientSource)
			}
			// v1 has no TLVs. The L4's unique ID is 16 bytes, 32 hex digits.
			wantID := regexp.MustCompile(`id=[0-9A-F]{32}$`)
			if version == "v1" {
				wantID = regexp.MustCompile(`id=$`)
			}
			if !wantID.MatchString(body) {
				t.Errorf("HAProxy's unique ID from the %s header: %q, want it to match %s", version, body, wantID)
			}
		})
	}
}
