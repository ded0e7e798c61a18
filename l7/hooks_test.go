package l7

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidegate/tidegate/shared/config"
)

// closerHandler is a middleware handler that records its Close.
type closerHandler struct {
	http.Handler
	closed *atomic.Int32
}

func (c closerHandler) Close() error {
	c.closed.Add(1)
	return nil
}

// TestPolicyHooks checks the hooks the policy wiring uses. A listener conn
// wrapper gets its listener's configuration and a pre-routing wrapper
// changes the path before routing. Middleware fields reach the access log,
// and a reload closes the middleware handlers of the retired routes.
func TestPolicyHooks(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "backend "+r.URL.Path)
	}))
	defer backend.Close()
	logPath := filepath.Join(t.TempDir(), "access.log")
	doc := fmt.Sprintf(`
l7:
  listeners:
    - name: edge
      address: 127.0.0.1:0
      limits: {max_header_count: 7}
  routes:
    - name: only
      match: {path: /routed}
      upstream: b
  upstreams:
    - name: b
      backends:
        - address: %s
  access_log:
    path: %s
`, strings.TrimPrefix(backend.URL, "http://"), logPath)
	f, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}

	var headerCount atomic.Int32
	var closed atomic.Int32
	s, err := New(f, slog.New(slog.DiscardHandler), nil,
		WithListenerConnWrapper(func(l *config.Listener, c net.Conn) net.Conn {
			headerCount.Store(int32(l.Limits.MaxHeaderCount))
			return c
		}),
		WithPreRouting(func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/before" {
					r.URL.Path = "/routed"
				}
				next.ServeHTTP(w, r)
			})
		}),
		WithMiddleware("fields", func(_ *config.L7, _ *config.Route, next http.Handler) (http.Handler, error) {
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				LogFields(r).RewritePath = "/from-middleware"
				next.ServeHTTP(w, r)
			})
			return closerHandler{Handler: h, closed: &closed}, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Drain(ctx)
	}()

	addr := s.Addrs()["edge"].String()
	resp, err := http.Get("http://" + addr + "/before")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "backend /routed" {
		t.Errorf("body %q, want %q (pre-routing path change)", body, "backend /routed")
	}
	if got := headerCount.Load(); got != 7 {
		t.Errorf("conn wrapper saw max_header_count %d, want 7", got)
	}
	logged, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logged), `"rewrite_path":"/from-middleware"`) {
		t.Errorf("access log %q lacks the middleware's rewrite_path", logged)
	}

	if closed.Load() != 0 {
		t.Fatalf("middleware closed %d times before reload", closed.Load())
	}
	f2, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(f2); err != nil {
		t.Fatal(err)
	}
	if got := closed.Load(); got != 1 {
		t.Errorf("after reload the retired middleware was closed %d times, want 1", got)
	}
}

func TestSameHandler(t *testing.T) {
	fn := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	mux := http.NewServeMux()
	closer := closerHandler{Handler: fn, closed: new(atomic.Int32)}
	tests := []struct {
		name string
		a, b http.Handler
		want bool
	}{
		{"same pointer", mux, mux, true},
		{"different pointers", mux, http.NewServeMux(), false},
		{"handler funcs", fn, fn, false}, // == on them would panic
		{"structs holding funcs", closer, closer, false},
		{"different types", mux, fn, false},
		{"nil", nil, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := sameHandler(tc.a, tc.b); got != tc.want {
				t.Errorf("sameHandler = %v, want %v", got, tc.want)
			}
		})
	}
}
