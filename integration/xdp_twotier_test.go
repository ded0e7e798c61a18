//go:build integration && linux

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/tidegate/tidegate/shared/echo"
)

const xdpL7Config = `admin: {address: "127.0.0.1:9920"}
drain_timeout: 2s
l7:
  listeners:
    - name: web
      address: "0.0.0.0:8443"
      proxy_protocol: {trusted: [%s/32, 10.201.1.1/32, 10.201.2.1/32], timeout: 2s}
  routes:
    - {name: all, match: {path_prefix: /}, upstream: echo}
  upstreams:
    - name: echo
      backends: [{address: "127.0.0.1:9000"}]
`

const xdpTwoTierL4Config = `admin: {address: %q}
drain_timeout: 2s
l4:
  dataplane:
    mode: xdp
    interfaces: [tgxl4c, tgxl4a, tgxl4b]
    snat_address: %s
    pin_path: %s
  vips:
    - name: web
      address: "%s:8443"
      reals: [{address: "%s:8443"}, {address: "%s:8443"}]
`

// TestXDPTwoTierHTTP runs the real binaries on every tier: tidegate l4 with
// the XDP engine, tidegate l7 requiring PROXY headers from the L4's
// addresses, and tidegate backend behind each L7 node.
func TestXDPTwoTierHTTP(t *testing.T) {
	n := newXDPNet(t, false)
	for _, node := range []string{"l7a", "l7b"} {
		ns := n.l7a
		if node == "l7b" {
			ns = n.l7b
		}
		startInNS(t, n.prefix+node, ns, "", "backend "+node, "backend", "--listen", "127.0.0.1:9000", "--name", "backend-"+node)
		cfg := writeFile(t, t.TempDir(), "l7.yaml", fmt.Sprintf(xdpL7Config, snatHost))
		startInNS(t, n.prefix+node, ns, "127.0.0.1:9920", "tidegate l7 "+node, "l7", "--config", cfg)
	}
	n.startL4Binary(t, fmt.Sprintf(xdpTwoTierL4Config, xdpAdmin, snatHost, n.pinDir, vipHost, l7aHost, l7bHost))

	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				return dialIn(n.cli, netip.MustParseAddrPort(addr))
			},
			DisableKeepAlives: true, // a new connection, and flow, per request
		},
	}
	backends := map[string]int{}
	const requests = 20
	for i := range requests {
		resp, err := client.Get(fmt.Sprintf("http://%s:8443/req/%d", vipHost, i))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: status %d: %s", i, resp.StatusCode, body)
		}
		var rep echo.Request
		if err := json.Unmarshal(body, &rep); err != nil {
			t.Fatalf("request %d: decode %s: %v", i, body, err)
		}
		backends[rep.Backend]++
		if got := rep.Headers["X-Forwarded-For"]; len(got) != 1 || got[0] != "10.201.0.2" {
			t.Errorf("request %d: backend saw X-Forwarded-For %q, want the client address 10.201.0.2", i, got)
		}
	}
	if len(backends) != 2 {
		t.Errorf("requests reached backends %v, want both L7 nodes used", backends)
	}
	if v := n.adminMetric(t, "tidegate_l4_xdp_new_flows_total"); v < requests {
		t.Errorf("tidegate_l4_xdp_new_flows_total = %v, want at least %d (every request through XDP)", v, requests)
	}
}
