//go:build integration

package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/tidegate/tidegate/shared/echo"
)

// l7Proc is a running "tidegate l7" process.
type l7Proc struct {
	*proc
	admin  string
	config string
}

// startL7 writes the l7 section body (indented YAML under "l7:") to a config
// file with a free admin address and runs the binary until it is ready.
func startL7(t *testing.T, dir, l7Body string, extra ...string) *l7Proc {
	t.Helper()
	admin := freeAddr(t)
	cfg := fmt.Sprintf("admin:\n  address: %s\ndrain_timeout: 10s\n%s\nl7:\n%s\n", admin, strings.Join(extra, "\n"), indent(l7Body, 2))
	path := writeFile(t, dir, fmt.Sprintf("l7-%d.yaml", time.Now().UnixNano()), cfg)
	p := startTidegate(t, "l7", "l7", "--config", path, "--log-level", "debug")
	waitReady(t, admin)
	return &l7Proc{proc: p, admin: admin, config: path}
}

// proxyHeader returns a PROXY v2 header claiming client src, sent to dst,
// with an optional unique-ID TLV.
func proxyHeader(t *testing.T, src string, dst net.Addr, uniqueID string) []byte {
	t.Helper()
	srcAddr, err := net.ResolveTCPAddr("tcp", src)
	if err != nil {
		t.Fatal(err)
	}
	h := proxyproto.HeaderProxyFromAddrs(2, srcAddr, dst)
	if uniqueID != "" {
		if err := h.SetTLVs([]proxyproto.TLV{{Type: proxyproto.PP2_TYPE_UNIQUE_ID, Value: []byte(uniqueID)}}); err != nil {
			t.Fatal(err)
		}
	}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dialL4 returns a dial function that acts like the L4 tier: it connects
// from local (empty for any 127.0.0.1 port) and sends a PROXY v2 header for
// client src before anything else. An empty src sends no header.
func dialL4(t *testing.T, local, src, uniqueID string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: 5 * time.Second}
		if local != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
		}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		if src == "" {
			return c, nil
		}
		if _, err := c.Write(proxyHeader(t, src, c.RemoteAddr(), uniqueID)); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
}

// l4Client returns an HTTP client whose connections start with a PROXY
// header for src. pool, when set, enables TLS with that trust and HTTP/2.
func l4Client(t *testing.T, src string, pool *x509.CertPool, serverName string) *http.Client {
	t.Helper()
	tr := &http.Transport{
		DialContext:       dialL4(t, "", src, ""),
		ForceAttemptHTTP2: true,
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: serverName},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// getEcho sends req and decodes the echo backend's description of what it
// received.
func getEcho(t *testing.T, c *http.Client, req *http.Request) (*http.Response, echo.Request) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body of %s: %v", req.URL, err)
	}
	var got echo.Request
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("decode echo response %q: %v", body, err)
		}
	}
	return resp, got
}

func newRequest(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// metricValue scrapes the admin /metrics and returns the value of the first
// sample whose line starts with series (name plus labels as printed).
func metricValue(t *testing.T, admin, series string) (float64, bool) {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v, true
			}
		}
	}
	return 0, false
}

// eventually polls cond until it returns true or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not happen within %s", what, within)
}

// accessLogLines reads a JSON access log into maps.
func accessLogLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read access log: %v", err)
	}
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("access log line %q is not JSON: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// startBackendProc runs "tidegate backend" named name on addr and waits
// until it accepts connections. Tests kill it with SIGKILL to play a
// backend that dies, and call it again on the same address to revive it.
func startBackendProc(t *testing.T, name, addr string) *proc {
	t.Helper()
	p := startTidegate(t, "backend-"+name, "backend", "--listen", addr, "--name", name)
	eventually(t, 10*time.Second, "backend "+name+" listening on "+addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	return p
}
