//go:build integration

package integration

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestL7BackendFailover kills one of two backend processes with SIGKILL
// mid-test: idempotent requests fail over without an error, POSTs are not
// retried, the dead backend is marked down, and it takes traffic again
// once it is restarted.
func TestL7BackendFailover(t *testing.T) {
	dir := t.TempDir()
	aAddr, bAddr := freeAddr(t), freeAddr(t)
	startBackendProc(t, "a", aAddr)
	bProc := startBackendProc(t, "b", bAddr)
	addr := freeAddr(t)
	l7 := startL7(t, dir, fmt.Sprintf(`listeners:
  - name: edge
    address: %s
    proxy_protocol:
      trusted: ["127.0.0.1/32"]
routes:
  - name: checked
    match:
      path_prefix: /checked
    upstream: checked
  - name: unchecked
    upstream: unchecked
upstreams:
  - name: checked
    retries: 2
    health_check:
      type: http
      path: /health
      interval: 500ms
      timeout: 400ms
      rise: 2
      fall: 2
    outlier:
      consecutive_failures: 2
      cooldown: 1s
    backends:
      - address: %s
      - address: %s
  # No health checks and a high ejection threshold, so requests keep
  # reaching the dead backend and the retry rules decide the outcome.
  - name: unchecked
    retries: 2
    outlier:
      consecutive_failures: 1000
    backends:
      - address: %s
      - address: %s
`, addr, aAddr, bAddr, aAddr, bAddr))

	c := l4Client(t, "198.51.100.40:8000", nil, "")
	do := func(method, path string) (int, string) {
		t.Helper()
		var body *strings.Reader
		if method == http.MethodPost {
			body = strings.NewReader("payload")
		} else {
			body = strings.NewReader("")
		}
		resp, got := getEcho(t, c, newRequest(t, method, "http://"+addr+path, body))
		return resp.StatusCode, got.Backend
	}
	healthy := func(upstream, backend string) float64 {
		v, ok := metricValue(t, l7.admin, fmt.Sprintf(`tidegate_l7_backend_healthy{backend=%q,upstream=%q}`, backend, upstream))
		if !ok {
			t.Fatalf("no tidegate_l7_backend_healthy sample for %s in %s", backend, upstream)
		}
		return v
	}

	served := map[string]int{}
	for range 4 {
		status, backend := do("GET", "/checked/warm")
		if status != http.StatusOK {
			t.Fatalf("GET before failure = %d, want 200", status)
		}
		served[backend]++
	}
	if served["a"] == 0 || served["b"] == 0 {
		t.Fatalf("before failure served %v, want requests on both a and b", served)
	}

	if err := bProc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if !bProc.wait(5 * time.Second) {
		t.Fatal("backend b survived SIGKILL")
	}

	t.Run("idempotent requests fail over", func(t *testing.T) {
		for i := range 20 {
			path := "/checked/get"
			if i%2 == 1 {
				path = "/unchecked/get"
			}
			status, backend := do("GET", path)
			if status != http.StatusOK || backend != "a" {
				t.Errorf("GET %s #%d after backend b died = %d from %q, want 200 from a", path, i, status, backend)
			}
		}
		if v, ok := metricValue(t, l7.admin, `tidegate_l7_upstream_retries_total{upstream="unchecked"}`); !ok || v < 1 {
			t.Errorf("retries on unchecked = %v (found %v), want at least 1", v, ok)
		}
	})

	t.Run("post is not retried", func(t *testing.T) {
		var failed, ok int
		for range 10 {
			status, _ := do("POST", "/unchecked/post")
			switch status {
			case http.StatusOK:
				ok++
			case http.StatusBadGateway:
				failed++
			default:
				t.Errorf("POST status %d, want 200 or 502", status)
			}
		}
		if failed == 0 {
			t.Errorf("10 POSTs over a live and a dead backend all succeeded (%d ok), want some 502: POST must not be retried", ok)
		}
		if ok == 0 {
			t.Errorf("no POST reached the live backend (%d failed)", failed)
		}
	})

	t.Run("dead backend marked down", func(t *testing.T) {
		eventually(t, 10*time.Second, "backend b marked unhealthy", func() bool {
			return healthy("checked", bAddr) == 0
		})
		if v := healthy("checked", aAddr); v != 1 {
			t.Errorf("live backend a healthy = %v, want 1", v)
		}
		series := fmt.Sprintf(`tidegate_l7_backend_ejections_total{backend=%q,upstream="checked"}`, bAddr)
		if v, ok := metricValue(t, l7.admin, series); !ok || v < 1 {
			t.Errorf("%s = %v (found %v), want at least 1 passive ejection", series, v, ok)
		}
	})

	t.Run("recovered backend returns", func(t *testing.T) {
		startBackendProc(t, "b", bAddr)
		eventually(t, 10*time.Second, "backend b marked healthy again", func() bool {
			return healthy("checked", bAddr) == 1
		})
		served := map[string]int{}
		for range 6 {
			status, backend := do("GET", "/checked/back")
			if status != http.StatusOK {
				t.Errorf("GET after recovery = %d, want 200", status)
			}
			served[backend]++
		}
		if served["b"] == 0 {
			t.Errorf("after recovery served %v, want requests on b", served)
		}
	})
}
