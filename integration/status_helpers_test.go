//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// statusToken is the admin token of the L4 in the status tests.
const statusToken = "status-test-token-5d1f"

// statusStack is an L4 with a token, two L7 nodes and two backends, all
// real tidegate processes on 127.0.0.1. The L7 listeners take plain HTTP
// behind PROXY v2 from the L4, and check their backends every 500ms. The
// timeouts are loose so that a loaded test machine does not mark a healthy
// node down.
type statusStack struct {
	vip          string
	l4Admin      string
	l7Admins     []string
	l7Addrs      []string
	backendAddrs []string
	backends     []*proc
	l4           *proc
}

const statusL7Config = `
admin: {address: %q}
drain_timeout: 2s
shutdown_delay: 0s
l7:
  listeners:
    - name: http
      address: %q
      proxy_protocol: {trusted: [127.0.0.1/32], timeout: 2s}
  routes:
    - {name: all, match: {path_prefix: /}, upstream: echo}
  upstreams:
    - name: echo
      health_check: {type: http, path: /, interval: 500ms, timeout: 500ms, rise: 1, fall: 2}
      backends:
%s
`

const statusL4Config = `
admin: {address: %q, token: %q}
drain_timeout: 2s
shutdown_delay: 0s
l4:
  vips:
    - name: web
      address: %q
      health_check: {type: http, path: /readyz, interval: 1s, timeout: 1s, rise: 1, fall: 3}
      reals:
%s
`

func startStatusStack(t *testing.T) *statusStack {
	t.Helper()
	dir := t.TempDir()
	s := &statusStack{}
	var backendLines []string
	for i := range 2 {
		addr := freeAddr(t)
		s.backendAddrs = append(s.backendAddrs, addr)
		s.backends = append(s.backends, startBackend(t, i, addr))
		backendLines = append(backendLines, fmt.Sprintf("        - address: %q", addr))
	}

	var realLines []string
	for i := range 2 {
		admin, data := freeAddr(t), freeAddr(t)
		cfg := writeFile(t, dir, fmt.Sprintf("l7-%d.yaml", i+1),
			fmt.Sprintf(statusL7Config, admin, data, strings.Join(backendLines, "\n")))
		startTidegate(t, fmt.Sprintf("l7-%d", i+1), "l7", "--config", cfg)
		s.l7Admins = append(s.l7Admins, admin)
		s.l7Addrs = append(s.l7Addrs, data)
		realLines = append(realLines, fmt.Sprintf("        - {address: %q, health_address: %q}", data, admin))
	}
	for _, a := range s.l7Admins {
		waitReady(t, a)
	}

	s.l4Admin, s.vip = freeAddr(t), freeAddr(t)
	cfg := writeFile(t, dir, "l4.yaml", fmt.Sprintf(statusL4Config, s.l4Admin, statusToken, s.vip, strings.Join(realLines, "\n")))
	s.l4 = startTidegate(t, "l4", "l4", "--config", cfg)
	waitReady(t, s.l4Admin)
	return s
}

func startBackend(t *testing.T, i int, addr string) *proc {
	t.Helper()
	name := fmt.Sprintf("backend-%d", i+1)
	p := startTidegate(t, name, "backend", "--listen", addr, "--name", name)
	waitHTTP(t, "http://"+addr+"/", http.StatusOK, 10*time.Second)
	return p
}

// get sends n requests through the VIP, each on a new connection so the L4
// places every one, and fails the test on any error.
func (s *statusStack) get(t *testing.T, n int) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := range n {
		resp, err := client.Get(fmt.Sprintf("http://%s/item/%d", s.vip, i))
		if err != nil {
			t.Fatalf("request %d through the VIP: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d through the VIP: status %s", i, resp.Status)
		}
	}
}

// scrape returns the metric families an admin listener exports.
func scrape(t *testing.T, admin string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics of %s: %v", admin, err)
	}
	return families
}

// familySum sums the counter or gauge samples of name whose labels
// include match.
func familySum(families map[string]*dto.MetricFamily, name string, match map[string]string) float64 {
	mf := families[name]
	if mf == nil {
		return 0
	}
	total := 0.0
	for _, m := range mf.GetMetric() {
		ok := true
		for k, v := range match {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			ok = ok && found
		}
		if !ok {
			continue
		}
		if c := m.GetCounter(); c != nil {
			total += c.GetValue()
		}
		if g := m.GetGauge(); g != nil {
			total += g.GetValue()
		}
	}
	return total
}

// realWeight returns the weight of real on VIP vip from GET /vips.
func realWeight(t *testing.T, admin, vip, real string) int {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/vips")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var vips []vipJSON
	if err := json.NewDecoder(resp.Body).Decode(&vips); err != nil {
		t.Fatalf("decode /vips: %v", err)
	}
	for _, v := range vips {
		if v.Name != vip {
			continue
		}
		for _, r := range v.Reals {
			if r.Address == real {
				return r.Weight
			}
		}
	}
	t.Fatalf("real %s of vip %s not in /vips", real, vip)
	return 0
}

// chromiumPath returns the Chromium binary. Without it the test skips,
// except under CI=true, where it fails: install the Debian package
// "chromium".
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium not found: install the Debian package chromium (apt-get install -y chromium)")
	}
	t.Skip("chromium not found; install the Debian package chromium to run this test")
	return ""
}

// screenshotDir returns integration/testdata/screenshots, which git
// ignores, creating it if needed.
func screenshotDir(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "testdata", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// waitTCPClosed waits until nothing accepts on addr.
func waitTCPClosed(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s still accepts connections", addr)
}
