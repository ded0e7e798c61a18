package l7

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tidegate/tidegate/l7/accesslog"
	"github.com/tidegate/tidegate/l7/route"
	"github.com/tidegate/tidegate/l7/upstream"
	"github.com/tidegate/tidegate/shared/admin"
	"github.com/tidegate/tidegate/shared/config"
)

// Middleware builds the handler that wraps next on one route. The server
// calls it for every route whenever it loads a configuration (at start and
// on each reload); returning next unchanged leaves the route alone. cfg is
// the whole L7 section, so a middleware can read its own keys.
type Middleware func(cfg *config.L7, rt *config.Route, next http.Handler) (http.Handler, error)

// ConnWrapper wraps a client connection after the PROXY and TLS stages and
// before net/http reads it. It receives HTTP/1.x connections (over TLS or
// cleartext) and cleartext connections on h2c listeners, but never HTTP/2
// over TLS.
type ConnWrapper func(net.Conn) net.Conn

// ListenerConnWrapper is a [ConnWrapper] that also receives the
// configuration of the listener that accepted the connection, as of the
// last reload, so it can apply per-listener settings such as request
// limits.
type ListenerConnWrapper func(l *config.Listener, c net.Conn) net.Conn

// PreRouting wraps the handler that routes a request. It runs for every
// request on every listener, after the request ID is set and before the
// route is chosen, so it can change the request that routing matches (the
// path, for example) or respond without routing.
type PreRouting func(next http.Handler) http.Handler

// Option configures [New].
type Option func(*options)

type options struct {
	middlewares  []namedMiddleware
	connWrappers []ListenerConnWrapper
	preRouting   []PreRouting
	// upstreamOpts apply to every pool; tests use them to stub transports.
	upstreamOpts []upstream.Option
	drainWaits   []DrainWait
	// fastPathCheck is the pre-routing wrappers' promise for the fast
	// path; see [WithFastPathCheck].
	fastPathCheck func(path string) bool
}

// WithFastPathCheck lets the HTTP/1.1 fast path serve listeners that have
// pre-routing wrappers. Without it, the fast path serves only servers
// without any. check receives the path of a GET or HEAD request without a
// body or Expect field, as sent (no escapes, since those go to net/http);
// returning true promises that every pre-routing wrapper passes such a
// request on to routing unchanged and without writing a response.
func WithFastPathCheck(check func(path string) bool) Option {
	return func(o *options) { o.fastPathCheck = check }
}

// DrainWait waits for work that requests started and that outlives them,
// such as background cache refreshes, until the work ends or ctx is done.
// It returns ctx's error when it stopped waiting early.
type DrainWait func(ctx context.Context) error

// WithDrainWait adds a wait to [Server.Drain]. Drain calls the waits in the
// order added, with its own context, once the requests in flight and
// upgraded connections have finished and before it closes the upstream
// pools and the middlewares.
func WithDrainWait(w DrainWait) Option {
	return func(o *options) { o.drainWaits = append(o.drainWaits, w) }
}

type namedMiddleware struct {
	name string
	m    Middleware
}

// WithMiddleware adds a per-route middleware. Middlewares run in the order
// they are added, so the first one added is the outermost and handles the
// request first.
func WithMiddleware(name string, m Middleware) Option {
	return func(o *options) { o.middlewares = append(o.middlewares, namedMiddleware{name, m}) }
}

// WithConnWrapper adds a connection wrapper. Wrappers apply in the order
// they are added, so the last one added is the outermost.
func WithConnWrapper(w ConnWrapper) Option {
	return WithListenerConnWrapper(func(_ *config.Listener, c net.Conn) net.Conn { return w(c) })
}

// WithListenerConnWrapper adds a connection wrapper that also receives the
// listener's configuration. It is ordered with [WithConnWrapper] wrappers
// in the order added.
func WithListenerConnWrapper(w ListenerConnWrapper) Option {
	return func(o *options) { o.connWrappers = append(o.connWrappers, w) }
}

// WithPreRouting adds a handler wrapper that runs before routing. Wrappers
// run in the order they are added, so the first one added is outermost.
// Unlike route middlewares they are built once, in [New], and a reload does
// not rebuild them.
func WithPreRouting(p PreRouting) Option {
	return func(o *options) { o.preRouting = append(o.preRouting, p) }
}

// state is everything a reload replaces at once. It is immutable after
// [Server.buildState] returns.
type state struct {
	cfg      *config.L7
	routes   *route.Table
	pools    map[string]*upstream.Pool
	handlers []http.Handler // by route index: middlewares around the upstream
	// direct maps each upstream handler to its pool when the HTTP/1.1 fast
	// path may forward to the pool itself.
	direct    map[http.Handler]*upstream.Pool
	accessLog *accesslog.Logger
	// closers are the middleware handlers that implement io.Closer. They
	// are closed when the state is retired.
	closers []io.Closer
}

// Server runs the L7 tier. It implements lifecycle.Service and
// lifecycle.Reopener.
type Server struct {
	logger     *slog.Logger
	opts       options
	metrics    *metrics
	requestIDs *requestIDs
	upgraded   *upgradeTracker

	state     atomic.Pointer[state]
	listeners []*listener

	// mu serializes Start, Reload, Reopen and Drain.
	mu       sync.Mutex
	watcher  *certWatcher
	draining bool
}

// New builds the L7 tier from f without binding anything. adm may be nil,
// in which case metrics go to a private registry.
func New(f *config.File, logger *slog.Logger, adm *admin.Server, opts ...Option) (*Server, error) {
	if f.L7 == nil {
		return nil, errors.New("l7: configuration has no l7 section")
	}
	s := &Server{
		logger:     logger.With("component", "l7"),
		requestIDs: newRequestIDs(),
	}
	for _, o := range opts {
		o(&s.opts)
	}
	var reg prometheus.Registerer = prometheus.NewRegistry()
	if adm != nil {
		reg = adm.Registry
	}
	s.metrics = newMetrics(reg, s)
	s.upgraded = newUpgradeTracker(s.metrics.upgraded)

	st, err := s.buildState(f.L7, nil)
	if err != nil {
		return nil, err
	}
	for _, lc := range f.L7.Listeners {
		ls, err := newListenerSettings(lc)
		if err != nil {
			st.close(nil)
			return nil, fmt.Errorf("l7: listener %q: %w", lc.Name, err)
		}
		s.listeners = append(s.listeners, newListener(s, ls))
	}
	s.state.Store(st)
	if adm != nil {
		registerStatus(adm, s, adm.Registry, s.logger)
		registerDrain(adm, s, s.logger)
	}
	return s, nil
}

// buildState compiles routes, pools, middleware chains and the access log
// of cfg. prev, when set, lends its access log if the path is unchanged.
func (s *Server) buildState(cfg *config.L7, prev *state) (*state, error) {
	routes, err := route.New(cfg.Routes)
	if err != nil {
		return nil, fmt.Errorf("l7: %w", err)
	}
	st := &state{cfg: cfg, routes: routes, pools: map[string]*upstream.Pool{}}
	for _, uc := range cfg.Upstreams {
		pool, err := upstream.New(uc, s.logger, s.opts.upstreamOpts...)
		if err != nil {
			st.close(prev)
			return nil, fmt.Errorf("l7: %w", err)
		}
		st.pools[uc.Name] = pool
	}

	upstreamHandlers := map[string]http.Handler{}
	st.direct = map[http.Handler]*upstream.Pool{}
	for name, pool := range st.pools {
		h := s.newUpstreamHandler(pool)
		upstreamHandlers[name] = h
		if pool.DirectCapable() {
			st.direct[h] = pool
		}
	}
	for i := range cfg.Routes {
		rc := &cfg.Routes[i]
		h := upstreamHandlers[rc.Upstream]
		if h == nil {
			st.close(prev)
			return nil, fmt.Errorf("l7: route %q: upstream %q not found", rc.Name, rc.Upstream)
		}
		// Wrap from the innermost middleware outwards so the first added
		// runs first.
		for j := len(s.opts.middlewares) - 1; j >= 0; j-- {
			nm := s.opts.middlewares[j]
			inner := h
			h, err = nm.m(cfg, rc, inner)
			if err != nil {
				st.close(prev)
				return nil, fmt.Errorf("l7: route %q: middleware %s: %w", rc.Name, nm.name, err)
			}
			if c, ok := h.(io.Closer); ok && !sameHandler(h, inner) {
				st.closers = append(st.closers, c)
			}
		}
		st.handlers = append(st.handlers, h)
	}

	if prev != nil && prev.accessLog.Path() == cfg.AccessLog.Path {
		st.accessLog = prev.accessLog
	} else {
		st.accessLog, err = accesslog.Open(cfg.AccessLog.Path)
		if err != nil {
			st.close(prev)
			return nil, fmt.Errorf("l7: %w", err)
		}
	}
	return st, nil
}

// sameHandler reports whether a and b are the same pointer. Handlers of
// other kinds are never the same, because == panics on some of them: on
// an http.HandlerFunc, and on a struct that holds one in an interface.
func sameHandler(a, b http.Handler) bool {
	ta := reflect.TypeOf(a)
	return ta != nil && ta == reflect.TypeOf(b) && ta.Kind() == reflect.Pointer && a == b
}

// close releases what st owns and next does not share.
func (st *state) close(next *state) {
	for _, p := range st.pools {
		p.Close()
	}
	for _, c := range st.closers {
		_ = c.Close()
	}
	if st.accessLog != nil && (next == nil || next.accessLog != st.accessLog) {
		_ = st.accessLog.Close()
	}
}

// Start binds every listener, starts health checks and the certificate
// watcher, and serves. On error nothing is left bound.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, l := range s.listeners {
		if err := l.listen(); err != nil {
			for _, bound := range s.listeners[:i] {
				bound.ln.Close()
			}
			return fmt.Errorf("l7: listen %s (%s): %w", l.settings.Load().cfg.Address, l.name, err)
		}
	}
	st := s.state.Load()
	for _, p := range st.pools {
		p.Start()
	}
	s.watcher = s.startCertWatcher()
	for _, l := range s.listeners {
		go l.serve()
		s.logger.Info("listening", "listener", l.name, "address", l.ln.Addr().String(), "tls", l.settings.Load().certs != nil)
	}
	return nil
}

// Addrs returns the bound address of each listener by name, for tests.
func (s *Server) Addrs() map[string]net.Addr {
	out := map[string]net.Addr{}
	for _, l := range s.listeners {
		if l.ln != nil {
			out[l.name] = l.ln.Addr()
		}
	}
	return out
}

func (s *Server) listenerByName(name string) *listener {
	for _, l := range s.listeners {
		if l.name == name {
			return l
		}
	}
	return nil
}

// Reload applies f. Routes, upstreams, the access log, PROXY trust lists,
// trusted forwarders and certificates change in place. Adding, removing or
// rebinding a listener, or switching its TLS or h2c on or off, needs a
// restart, so Reload rejects such a file.
func (s *Server) Reload(f *config.File) error {
	if f.L7 == nil {
		return errors.New("l7: configuration has no l7 section")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return errors.New("l7: draining, reload ignored")
	}
	if err := s.checkListenersUnchanged(f.L7.Listeners); err != nil {
		return err
	}
	settings := make([]*listenerSettings, len(s.listeners))
	for i, lc := range f.L7.Listeners {
		ls, err := newListenerSettings(lc)
		if err != nil {
			return fmt.Errorf("l7: listener %q: %w", lc.Name, err)
		}
		settings[i] = ls
	}
	prev := s.state.Load()
	st, err := s.buildState(f.L7, prev)
	if err != nil {
		return err
	}
	s.metrics.backends.forget(prev, st)

	for name, p := range st.pools {
		if old := prev.pools[name]; old != nil {
			p.Inherit(old)
		}
		p.Start()
	}
	s.state.Store(st)
	for i, l := range s.listeners {
		l.settings.Store(settings[i])
	}
	// Requests in flight keep using the old pools' transports; Close only
	// stops their health checks and idle connections.
	prev.close(st)

	if s.watcher != nil {
		s.watcher.close()
	}
	s.watcher = s.startCertWatcher()
	return nil
}

func (s *Server) checkListenersUnchanged(next []config.Listener) error {
	if len(next) != len(s.listeners) {
		return fmt.Errorf("l7: reload changes the number of listeners from %d to %d (restart to apply)", len(s.listeners), len(next))
	}
	for i, l := range s.listeners {
		cur, nc := l.settings.Load().cfg, next[i]
		switch {
		case cur.Name != nc.Name, cur.Address != nc.Address:
			return fmt.Errorf("l7: reload changes listeners[%d] from %s %s to %s %s (restart to apply)", i, cur.Name, cur.Address, nc.Name, nc.Address)
		case (cur.TLS == nil) != (nc.TLS == nil), cur.H2C != nc.H2C:
			return fmt.Errorf("l7: reload switches tls or h2c on listener %q (restart to apply)", cur.Name)
		}
	}
	return nil
}

// Reopen reopens the access-log file after rotation.
func (s *Server) Reopen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.Load().accessLog.Reopen()
}

// Drain stops accepting connections, sends GOAWAY to HTTP/2 clients, closes
// idle keep-alive connections, and waits for requests in flight and
// upgraded connections until they finish or ctx ends. Then it closes what is
// left and returns ctx's error if it had to.
func (s *Server) Drain(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	if s.watcher != nil {
		s.watcher.close()
		s.watcher = nil
	}
	s.mu.Unlock()

	var wg sync.WaitGroup
	errs := make(chan error, 2*len(s.listeners)+1)
	for _, l := range s.listeners {
		if l.ln == nil {
			continue
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			// Shutdown closes the listener first, so no new connection is
			// accepted from here on.
			if err := l.srv.Shutdown(ctx); err != nil {
				errs <- err
			}
		}()
		go func() {
			defer wg.Done()
			if err := l.fast.drain(ctx); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	// Upgrades are waited for last: a WebSocket handshake still in flight
	// above may turn into an upgraded connection.
	if err := s.upgraded.wait(ctx); err != nil {
		errs <- err
	}
	close(errs)
	s.runDrainWaits(ctx)

	var err error
	if ctx.Err() != nil {
		err = ctx.Err()
		for _, l := range s.listeners {
			_ = l.srv.Close()
			l.fast.closeAll()
		}
		n := s.upgraded.closeAll()
		s.logger.Warn("drain ended before in-flight work finished, closed the rest", "reason", context.Cause(ctx), "upgraded_closed", n)
	} else {
		for e := range errs {
			err = errors.Join(err, e)
		}
	}
	st := s.state.Load()
	st.close(nil)
	return err
}

// runDrainWaits runs the [DrainWait] functions in order. Once ctx is done
// each returns at once, so the drain deadline bounds them all.
func (s *Server) runDrainWaits(ctx context.Context) {
	for _, w := range s.opts.drainWaits {
		if err := w(ctx); err != nil {
			s.logger.Warn("drain wait stopped", "err", err)
		}
	}
}

// upgradeTracker holds hijacked connections (WebSocket and other upgrades)
// so Drain can wait for them and close them at the deadline.
type upgradeTracker struct {
	mu    sync.Mutex
	conns map[*upgradedConn]struct{}
	idle  chan struct{} // closed when conns becomes empty; nil while empty
	gauge prometheus.Gauge
}

func newUpgradeTracker(g prometheus.Gauge) *upgradeTracker {
	return &upgradeTracker{conns: map[*upgradedConn]struct{}{}, gauge: g}
}

type upgradedConn struct {
	net.Conn
	t    *upgradeTracker
	once sync.Once
}

func (c *upgradedConn) Close() error {
	c.once.Do(func() { c.t.remove(c) })
	return c.Conn.Close()
}

func (t *upgradeTracker) add(c net.Conn) net.Conn {
	uc := &upgradedConn{Conn: c, t: t}
	t.mu.Lock()
	if len(t.conns) == 0 {
		t.idle = make(chan struct{})
	}
	t.conns[uc] = struct{}{}
	t.mu.Unlock()
	t.gauge.Inc()
	return uc
}

func (t *upgradeTracker) remove(c *upgradedConn) {
	t.mu.Lock()
	delete(t.conns, c)
	if len(t.conns) == 0 && t.idle != nil {
		close(t.idle)
		t.idle = nil
	}
	t.mu.Unlock()
	t.gauge.Dec()
}

// wait returns when no upgraded connection is open or ctx ends.
func (t *upgradeTracker) wait(ctx context.Context) error {
	t.mu.Lock()
	idle := t.idle
	t.mu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// closeAll closes every upgraded connection and returns how many it closed.
func (t *upgradeTracker) closeAll() int {
	t.mu.Lock()
	conns := make([]*upgradedConn, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	return len(conns)
}

func newSyncPool(size int) *sync.Pool {
	return &sync.Pool{New: func() any {
		b := make([]byte, size)
		return &b
	}}
}
