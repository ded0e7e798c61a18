//go:build integration && linux

package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

const xdpAdmin = "127.0.0.1:9911"

// xdpL4Config is a tidegate l4 configuration for the XDP topology.
func xdpL4Config(mode, pinPath string, ifaces ...string) string {
	return fmt.Sprintf(`admin: {address: %q}
drain_timeout: 2s
l4:
  dataplane:
    mode: %s
    interfaces: [%s]
    snat_address: %s
    pin_path: %s
  vips:
    - name: cmd
      address: "%s:80"
      reals: [{address: "%s:8080"}, {address: "%s:8080"}]
`, xdpAdmin, mode, strings.Join(ifaces, ", "), snatHost, pinPath, vipHost, l7aHost, l7bHost)
}

// startL4In runs `tidegate l4` inside the L4 namespace and waits until
// its admin listener reports ready.
func (n *xdpNet) startL4Binary(t *testing.T, cfg string, args ...string) *proc {
	t.Helper()
	return startInNS(t, n.prefix+"l4", n.l4, xdpAdmin, "tidegate l4", append([]string{"l4", "--config", writeFile(t, t.TempDir(), "l4.yaml", cfg)}, args...)...)
}

// startInNS runs the tidegate binary inside the named namespace and, when
// admin is set, waits until GET /readyz there returns 200.
func startInNS(t *testing.T, nsName string, ns netns.NsHandle, admin, name string, args ...string) *proc {
	t.Helper()
	argv := append([]string{"netns", "exec", nsName, tidegateBin}, args...)
	p := startCommand(t, name, exec.Command("ip", argv...))
	if admin == "" {
		return p
	}

	deadline := time.Now().Add(20 * time.Second)
	for {
		code, _ := httpGetIn(ns, admin, "/readyz")
		if code == http.StatusOK {
			return p
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("%s not ready (exited: %v)\n%s", name, p.exited(), p.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// adminGet fetches a path from the admin listener inside the L4 namespace.
func (n *xdpNet) adminGet(path string) (int, string) {
	return httpGetIn(n.l4, xdpAdmin, path)
}

// httpGetIn sends GET http://addr/path from a socket in ns.
func httpGetIn(ns netns.NsHandle, addr, path string) (int, string) {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, a string) (net.Conn, error) {
		return dialIn(ns, netip.MustParseAddrPort(a))
	}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("http://" + addr + path)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// adminMetric returns one series from the admin /metrics, 0 when absent.
func (n *xdpNet) adminMetric(t *testing.T, series string) float64 {
	t.Helper()
	code, body := n.adminGet("/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: status %d", code)
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return v
		}
	}
	return 0
}

func TestXDPBinary(t *testing.T) {
	n := newXDPNet(t, false)
	ifaces := l4Ifaces

	p := n.startL4Binary(t, xdpL4Config("xdp", n.pinDir, ifaces...))
	if v := n.adminMetric(t, `tidegate_l4_engine_info{engine="xdp"}`); v != 1 {
		t.Errorf(`tidegate_l4_engine_info{engine="xdp"} = %v, want 1`, v)
	}

	c := n.dial(t, 80)
	xdpUpload(t, c, 4<<20, 11)
	if v := n.adminMetric(t, "tidegate_l4_xdp_new_flows_total"); v < 1 {
		t.Errorf("tidegate_l4_xdp_new_flows_total = %v, want at least 1", v)
	}

	// Restart the binary in the middle of a download: the pinned program
	// keeps forwarding while no process runs, and the new process takes
	// over the pinned maps and links.
	var second *proc
	xdpDownload(t, n.dial(t, 80), 50<<20, 12, func() {
		p.stop(10 * time.Second)
		for _, dev := range ifaces {
			if !xdpAttached(t, n.l4, dev) {
				t.Errorf("%s lost its XDP program when tidegate l4 stopped without --detach", dev)
			}
		}
		second = n.startL4Binary(t, xdpL4Config("xdp", n.pinDir, ifaces...), "--detach")
	})
	xdpWho(t, c)

	// A stop with --detach removes the program and every pin.
	second.stop(10 * time.Second)
	for _, dev := range ifaces {
		if xdpAttached(t, n.l4, dev) {
			t.Errorf("%s still has an XDP program after a stop with --detach", dev)
		}
	}
	if _, err := os.Stat(n.pinDir); !os.IsNotExist(err) {
		t.Errorf("pin directory %s remains after a stop with --detach (stat: %v)", n.pinDir, err)
	}

	// Auto mode with an interface that does not exist runs the userspace
	// engine alone and says why.
	third := n.startL4Binary(t, xdpL4Config("auto", n.pinDir, "tgxmissing"))
	if v := n.adminMetric(t, `tidegate_l4_engine_info{engine="userspace"}`); v != 1 {
		t.Errorf(`tidegate_l4_engine_info{engine="userspace"} = %v, want 1`, v)
	}
	xdpWho(t, n.dial(t, 80))
	if out := third.out.String(); !strings.Contains(out, "xdp engine not attached") {
		t.Errorf("auto mode without XDP logged no reason:\n%s", out)
	}

	// Mode xdp that cannot attach fails at start.
	cfg := writeFile(t, t.TempDir(), "l4.yaml", strings.Replace(xdpL4Config("xdp", n.pinDir, "tgxmissing"), xdpAdmin, "127.0.0.1:9912", 1))
	third.stop(10 * time.Second)
	out, err := exec.Command("ip", "netns", "exec", n.prefix+"l4", tidegateBin, "l4", "--config", cfg).CombinedOutput()
	if err == nil {
		t.Errorf("tidegate l4 in mode xdp started without its interface:\n%s", out)
	}
	if !strings.Contains(string(out), "tgxmissing") {
		t.Errorf("start failure does not name the interface:\n%s", out)
	}
}
