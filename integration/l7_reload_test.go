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

// TestL7Reload changes the route's upstream with SIGHUP during a slow
// download, then sends an invalid config and one that moves a listener:
// the download finishes, the valid change applies, the others are
// rejected while the running config keeps serving.
func TestL7Reload(t *testing.T) {
	dir := t.TempDir()
	a, _ := startEcho(t, "a")
	b, _ := startEcho(t, "b")
	const chunks, chunkSize = 8, 32 << 10
	slow := startStreamBackend(t, chunks, chunkSize, 150*time.Millisecond)
	addr := freeAddr(t)
	body := func(target, listenAddr string) string {
		return fmt.Sprintf(`listeners:
  - name: edge
    address: %s
routes:
  - name: download
    match:
      path: /download
    upstream: slow
  - name: all
    upstream: %s
upstreams:
  - name: a
    backends:
      - address: %s
  - name: b
    backends:
      - address: %s
  - name: slow
    backends:
      - address: %s
`, listenAddr, target, a, b, slow)
	}
	l7 := startL7(t, dir, body("a", addr))
	header, err := os.ReadFile(l7.config)
	if err != nil {
		t.Fatal(err)
	}
	prefix, _, _ := strings.Cut(string(header), "l7:\n")
	rewrite := func(l7Body string) {
		t.Helper()
		if err := os.WriteFile(l7.config, []byte(prefix+"l7:\n"+indent(l7Body, 2)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := l7.signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	c := &http.Client{Timeout: 10 * time.Second}
	backend := func() string {
		t.Helper()
		_, got := getEcho(t, c, newRequest(t, "GET", "http://"+addr+"/", nil))
		return got.Backend
	}
	if got := backend(); got != "a" {
		t.Fatalf("before reload served by %q, want a", got)
	}

	resp, err := c.Get("http://" + addr + "/download")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()

	rewrite(body("b", addr))
	eventually(t, 5*time.Second, "reload to upstream b", func() bool { return backend() == "b" })

	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != chunks*chunkSize {
		t.Errorf("download across reload got %d bytes, err %v; want %d bytes", n, err, chunks*chunkSize)
	}

	rewrite(body("b", addr) + "bogus_key: 1\n")
	eventually(t, 5*time.Second, "invalid config rejected", func() bool {
		return strings.Contains(l7.out.String(), "bogus_key: unknown key")
	})
	rewrite(body("a", freeAddr(t)))
	eventually(t, 5*time.Second, "listener move rejected", func() bool {
		return strings.Count(l7.out.String(), "reload rejected") >= 2
	})
	if got := backend(); got != "b" {
		t.Errorf("after rejected reloads served by %q, want b (the last valid config)", got)
	}
	if !strings.Contains(l7.out.String(), "restart to apply") {
		t.Error("moving a listener was not rejected with a restart hint")
	}
	if l7.exited() {
		t.Fatal("process exited after a bad reload")
	}
}
