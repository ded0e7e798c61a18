//go:build integration

package integration

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestL7AccessLogCacheField checks that each access-log line of a cached
// route names what the cache did: miss, hit, bypass, stale (served while a
// background refresh runs) and revalidated (a 304 from the backend).
func TestL7AccessLogCacheField(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		switch {
		case strings.HasPrefix(r.URL.Path, "/swr/"):
			w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=60")
		case strings.HasPrefix(r.URL.Path, "/short/"):
			w.Header().Set("Cache-Control", "max-age=1")
		default:
			w.Header().Set("Cache-Control", "max-age=300")
		}
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		fmt.Fprintf(w, "body of %s", r.URL.Path)
	}))
	t.Cleanup(backend.Close)

	dir := t.TempDir()
	addr := freeAddr(t)
	logPath := filepath.Join(dir, "access.log")
	startL7(t, dir, fmt.Sprintf(`listeners:
  - name: edge
    address: %s
routes:
  - name: plain
    match: {path_prefix: /plain/}
    upstream: b
  - name: cached
    upstream: b
    cache: {enabled: true}
upstreams:
  - name: b
    backends:
      - address: %s
access_log:
  path: %s
`, addr, backend.Listener.Addr().String(), logPath))

	get := func(path string, header ...string) string {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s = %d, want 200", path, resp.StatusCode)
		}
		return resp.Header.Get("X-Request-Id")
	}
	ids := map[string]string{}
	ids["miss"] = get("/page")
	ids["hit"] = get("/page")
	ids["bypass"] = get("/page", "Cache-Control", "no-store")

	get("/swr/page")
	get("/short/page")
	// Both responses have a max-age of one second. Past two seconds they
	// are stale, however the cache rounds the age from Date.
	time.Sleep(2100 * time.Millisecond)
	ids["stale"] = get("/swr/page")
	ids["revalidated"] = get("/short/page")

	plainID := get("/plain/page")

	cacheByID := func() map[string]any {
		out := map[string]any{}
		for _, l := range accessLogLines(t, logPath) {
			if id, ok := l["request_id"].(string); ok {
				out[id] = l["cache"]
			}
		}
		return out
	}
	eventually(t, 5*time.Second, "access log lines for every request", func() bool {
		got := cacheByID()
		for _, id := range ids {
			if _, ok := got[id]; !ok {
				return false
			}
		}
		_, ok := got[plainID]
		return ok
	})

	got := cacheByID()
	for want, id := range ids {
		if got[id] != want {
			t.Errorf("request %s: access log cache = %v, want %q", id, got[id], want)
		}
	}
	if v := got[plainID]; v != nil {
		t.Errorf("request %s on a route without cache: access log cache = %v, want no field", plainID, v)
	}
}
