// Package admin serves the per-process admin HTTP listener: Prometheus
// metrics, liveness, readiness, optional pprof, and whatever endpoints a tier
// registers.
package admin

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server is the admin HTTP server. /readyz answers 503 until [Server.SetReady]
// is called with true, and again once the process starts draining.
type Server struct {
	mux      *http.ServeMux
	srv      *http.Server
	ln       net.Listener
	ready    atomic.Bool
	token    string
	logger   *slog.Logger
	Registry *prometheus.Registry

	crossOrigin *http.CrossOriginProtection
}

// New returns a server with a fresh registry that already holds the Go
// runtime and process collectors.
func New(token string, pprofOn bool, logger *slog.Logger) *Server {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	s := &Server{mux: http.NewServeMux(), token: token, logger: logger, Registry: reg}
	s.crossOrigin = http.NewCrossOriginProtection()
	s.crossOrigin.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		logger.Warn("admin request rejected", "path", r.URL.Path, "remote", r.RemoteAddr, "reason", "cross-origin browser request", "origin", r.Header.Get("Origin"))
		http.Error(w, "cross-origin request rejected", http.StatusForbidden)
	}))
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	s.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !s.ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	if pprofOn {
		// Profiles expose the command line and call stacks, so they need
		// the token like the mutating endpoints.
		s.mux.Handle("GET /debug/pprof/", s.requireToken(http.HandlerFunc(pprof.Index)))
		s.mux.Handle("GET /debug/pprof/cmdline", s.requireToken(http.HandlerFunc(pprof.Cmdline)))
		s.mux.Handle("GET /debug/pprof/profile", s.requireToken(http.HandlerFunc(pprof.Profile)))
		s.mux.Handle("GET /debug/pprof/symbol", s.requireToken(http.HandlerFunc(pprof.Symbol)))
		s.mux.Handle("GET /debug/pprof/trace", s.requireToken(http.HandlerFunc(pprof.Trace)))
	}
	return s
}

// Handle registers a read-only endpoint, for example "GET /vips".
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// HandleMutating registers an endpoint that changes state. When the server
// has a token, requests must carry it as "Authorization: Bearer TOKEN".
// Browser requests from another origin are rejected with 403 (by their
// Sec-Fetch-Site or Origin header), so a web page elsewhere cannot make an
// operator's browser drain a real, even when no token is set. Clients that
// send neither header, such as curl, are not affected.
func (s *Server) HandleMutating(pattern string, h http.Handler) {
	s.mux.Handle(pattern, s.crossOrigin.Handler(s.requireToken(h)))
}

// requireToken wraps h so that, when the server has a token, requests
// without "Authorization: Bearer TOKEN" get 401.
func (s *Server) requireToken(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.token != "" {
			got, ok := bearerToken(r.Header.Get("Authorization"))
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.token)) != 1 {
				s.logger.Warn("admin request rejected", "path", r.URL.Path, "remote", r.RemoteAddr, "reason", "missing or wrong token")
				http.Error(w, "missing or invalid bearer token", http.StatusUnauthorized)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// bearerToken returns the token of an "Authorization: Bearer TOKEN" value.
// The scheme is matched in any letter case, as RFC 9110 section 11.1
// requires.
func bearerToken(v string) (string, bool) {
	scheme, token, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return token, true
}

// SetReady sets what /readyz reports.
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

// Ready reports what /readyz reports.
func (s *Server) Ready() bool { return s.ready.Load() }

// Listen binds addr and serves in the background. An empty addr disables the
// listener but keeps the registry usable.
func (s *Server) Listen(addr string) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.ln = ln
	s.srv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug),
	}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("admin listener stopped", "err", err)
		}
	}()
	s.logger.Info("admin listening", "address", ln.Addr().String())
	return nil
}

// Addr returns the bound address, or nil before Listen.
func (s *Server) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Shutdown stops the listener, waiting for admin requests until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.srv == nil {
		return nil
	}
	return s.srv.Shutdown(ctx)
}
