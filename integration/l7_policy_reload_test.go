//go:build integration

package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestL7PolicyReload changes a route's access rules, rate limit and request
// limits with SIGHUP and checks that the real binary applies the new
// policies without a restart, keeps serving, and keeps its metrics.
func TestL7PolicyReload(t *testing.T) {
	dir := t.TempDir()
	backend, _ := startEcho(t, "echo")
	addr := freeAddr(t)
	body := func(methods string, requests, maxBody int) string {
		return fmt.Sprintf(`listeners:
  - name: edge
    address: %s
    limits: {max_body_bytes: %d}
routes:
  - name: api
    upstream: echo
    policy:
      access: {methods: [%s]}
      rate_limit: {requests: %d, per: 1m, burst: %d}
upstreams:
  - name: echo
    backends:
      - address: %s
`, addr, maxBody, methods, requests, requests, backend)
	}
	l7 := startL7(t, dir, body("GET", 2, 100))
	header, err := os.ReadFile(l7.config)
	if err != nil {
		t.Fatal(err)
	}
	prefix, _, _ := strings.Cut(string(header), "l7:\n")
	reload := func(l7Body string) {
		t.Helper()
		if err := os.WriteFile(l7.config, []byte(prefix+"l7:\n"+indent(l7Body, 2)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := l7.signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}

	c := &http.Client{Timeout: 5 * time.Second}
	t.Cleanup(c.CloseIdleConnections)
	status := func(method string, size int) int {
		t.Helper()
		req := newRequest(t, method, "http://"+addr+"/", strings.NewReader(strings.Repeat("x", size)))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s with %d body bytes: %v", method, size, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}

	if got := status(http.MethodPost, 10); got != http.StatusMethodNotAllowed {
		t.Errorf("POST before reload: status %d, want 405", got)
	}
	if got := status(http.MethodGet, 0); got != http.StatusOK {
		t.Errorf("first GET: status %d, want 200", got)
	}
	if got := status(http.MethodGet, 0); got != http.StatusOK {
		t.Errorf("second GET: status %d, want 200", got)
	}
	if got := status(http.MethodGet, 0); got != http.StatusTooManyRequests {
		t.Errorf("third GET within a minute at 2 per minute: status %d, want 429", got)
	}

	// The new rate limit starts with a full bucket and POST is allowed.
	// Request limits apply per connection as they were when it was
	// accepted, so the idle connections close after the reload.
	reload(body("GET, POST", 100, 1000))
	eventually(t, 5*time.Second, "config reloaded log line", func() bool {
		return strings.Contains(l7.out.String(), "config reloaded")
	})
	c.CloseIdleConnections()
	if got := status(http.MethodPost, 10); got != http.StatusOK {
		t.Errorf("POST after reload: status %d, want 200", got)
	}
	if got := status(http.MethodGet, 0); got != http.StatusOK {
		t.Errorf("GET after reload: status %d, want 200", got)
	}
	if got := status(http.MethodPost, 500); got != http.StatusOK {
		t.Errorf("POST of 500 bytes under the new 1000-byte limit: status %d, want 200", got)
	}
	if got := status(http.MethodPost, 2000); got != http.StatusRequestEntityTooLarge {
		t.Errorf("POST of 2000 bytes over the new limit: status %d, want 413", got)
	}

	if _, ok := metricValue(t, l7.admin, `tidegate_l7_ratelimit_decisions_total{result="rejected",route="api"}`); !ok {
		t.Error("rate-limit metrics missing after reload")
	}
	if l7.exited() {
		t.Fatal("process exited during reload")
	}
	if strings.Contains(l7.out.String(), "reload rejected") {
		t.Errorf("reload was rejected:\n%s", l7.out.String())
	}
}
