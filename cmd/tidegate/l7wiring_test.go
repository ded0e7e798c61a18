package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/tidegate/tidegate/shared/admin"
	"github.com/tidegate/tidegate/shared/config"
)

// wiringConfig is an L7 configuration with a caching route for /static/ and
// a route without caching for the rest.
const wiringConfig = `
admin: {address: "127.0.0.1:0", token: wiring-token}
l7:
  cache: {max_size: %s}
  listeners:
    - {name: web, address: "127.0.0.1:0"}
  routes:
    - {name: static, upstream: app, match: {path_prefix: /static/}, cache: {enabled: true}}
    - {name: api, upstream: app}
  upstreams:
    - {name: app, backends: [{address: "127.0.0.1:9"}]}
`

func parseWiringConfig(t *testing.T, maxSize string) *config.File {
	t.Helper()
	f, err := config.Parse([]byte(fmt.Sprintf(wiringConfig, maxSize)))
	if err != nil {
		t.Fatalf("parse config: %v", err)
	}
	return f
}

// lockedBuffer is a log destination that handlers may write to from any
// goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// buildRoutes builds the cache middleware of every route of f around next.
func buildRoutes(t *testing.T, lc *l7Cache, f *config.File, next http.Handler) []http.Handler {
	t.Helper()
	var out []http.Handler
	for i := range f.L7.Routes {
		h, err := lc.middleware(f.L7, &f.L7.Routes[i], next)
		if err != nil {
			t.Fatalf("middleware for route %s: %v", f.L7.Routes[i].Name, err)
		}
		out = append(out, h)
	}
	return out
}

func TestL7CacheMiddlewareInvalidates(t *testing.T) {
	f := parseWiringConfig(t, "16MiB")
	lc, err := newL7Cache(f.L7, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatalf("newL7Cache: %v", err)
	}
	upstreamGets := 0
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			upstreamGets++
		}
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "body")
	})
	routes := buildRoutes(t, lc, f, upstream)
	static, api := routes[0], routes[1]

	get := func(h http.Handler) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://www.example.test/static/a.css", nil))
		return rec
	}
	get(static)
	if cs := get(static).Header().Get("Cache-Status"); !strings.Contains(cs, "hit") {
		t.Fatalf("second GET on the caching route Cache-Status = %q, want a hit", cs)
	}
	if upstreamGets != 1 {
		t.Fatalf("upstream received %d GETs, want 1", upstreamGets)
	}

	// The route without caching passes GETs through untouched.
	if cs := get(api).Header().Get("Cache-Status"); cs != "" {
		t.Errorf("GET on the route without caching Cache-Status = %q, want none", cs)
	}
	if upstreamGets != 2 {
		t.Errorf("upstream received %d GETs after a GET on the route without caching, want 2", upstreamGets)
	}

	// A POST through the route without caching removes what the caching
	// route stored for the same URI.
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "http://www.example.test/static/a.css", strings.NewReader("x")))
	if rec.Code != http.StatusOK {
		t.Fatalf("POST status = %d, want 200", rec.Code)
	}
	if cs := get(static).Header().Get("Cache-Status"); strings.Contains(cs, "hit") {
		t.Errorf("GET after POST Cache-Status = %q, want a miss", cs)
	}
	if upstreamGets != 3 {
		t.Errorf("upstream received %d GETs after the POST, want 3", upstreamGets)
	}
}

func TestL7CacheResizeOnlyOnChange(t *testing.T) {
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	start := parseWiringConfig(t, "16MiB")
	lc, err := newL7Cache(start.L7, logger, nil)
	if err != nil {
		t.Fatalf("newL7Cache: %v", err)
	}
	next := http.NotFoundHandler()

	resized := func() int { return strings.Count(logs.String(), "cache resized") }

	buildRoutes(t, lc, start, next)
	if n := resized(); n != 0 {
		t.Errorf("building the start configuration logged %d resizes, want 0", n)
	}

	bigger := parseWiringConfig(t, "32MiB")
	buildRoutes(t, lc, bigger, next)
	if n := resized(); n != 1 {
		t.Errorf("a reload to 32MiB over two routes logged %d resizes, want 1", n)
	}
	if !strings.Contains(logs.String(), "max_bytes=33554432") {
		t.Errorf("resize log lacks max_bytes=33554432:\n%s", logs.String())
	}

	buildRoutes(t, lc, parseWiringConfig(t, "32MiB"), next)
	if n := resized(); n != 1 {
		t.Errorf("a reload with the same budget logged %d resizes in total, want 1", n)
	}

	buildRoutes(t, lc, start, next)
	if n := resized(); n != 2 {
		t.Errorf("a reload back to 16MiB logged %d resizes in total, want 2", n)
	}
}

func TestL7OptionsPurgeEndpoint(t *testing.T) {
	f := parseWiringConfig(t, "16MiB")
	logger := slog.New(slog.DiscardHandler)
	adm := admin.New(f.Admin.Token, false, logger)
	opts, err := l7Options(f, logger, adm)
	if err != nil {
		t.Fatalf("l7Options: %v", err)
	}
	if len(opts) == 0 {
		t.Fatal("l7Options returned no options")
	}
	if err := adm.Listen("127.0.0.1:0"); err != nil {
		t.Fatalf("admin listen: %v", err)
	}
	t.Cleanup(func() { _ = adm.Shutdown(t.Context()) })

	purge := func(token string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, "http://"+adm.Addr().String()+"/cache/purge?url=http://www.example.test/a", nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST /cache/purge: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := purge(""); code != http.StatusUnauthorized {
		t.Errorf("purge without token = %d, want 401", code)
	}
	if code := purge("wiring-token"); code != http.StatusOK {
		t.Errorf("purge with token = %d, want 200", code)
	}
}

func TestL7OptionsWithoutAdmin(t *testing.T) {
	f := parseWiringConfig(t, "16MiB")
	if _, err := l7Options(f, slog.New(slog.DiscardHandler), nil); err != nil {
		t.Errorf("l7Options without admin server: %v", err)
	}
	if _, err := l7Options(&config.File{}, slog.New(slog.DiscardHandler), nil); err == nil {
		t.Error("l7Options without an l7 section returned no error")
	}
}

func TestNewL7BuildsServer(t *testing.T) {
	f := parseWiringConfig(t, "16MiB")
	logger := slog.New(slog.DiscardHandler)
	svc, err := newL7(f, logger, admin.New("", false, logger))
	if err != nil {
		t.Fatalf("newL7: %v", err)
	}
	if svc == nil {
		t.Fatal("newL7 returned a nil service")
	}
	if _, err := newL7(&config.File{}, logger, nil); err == nil {
		t.Error("newL7 without an l7 section returned no error")
	}
}
