package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidegate/tidegate/shared/config"
	"github.com/tidegate/tidegate/shared/health"
)

// Errors the pool returns instead of a response. The proxy maps them to
// status codes.
var (
	ErrNoBackend  = errors.New("upstream: no healthy backend")
	ErrOverloaded = errors.New("upstream: too many concurrent requests")
)

// Backend is one server of a pool. Its counters are safe for concurrent
// use.
type Backend struct {
	Addr   string
	Weight int

	inFlight atomic.Int64
	conns    atomic.Int64 // open connections, idle or in use
	up       atomic.Bool  // last active health check verdict
	// failures counts consecutive failed requests for passive ejection.
	failures     atomic.Int64
	ejectedUntil atomic.Int64 // unix nanoseconds
	ejections    atomic.Uint64
	// draining is set through the admin API: the backend gets no new
	// requests, and requests in flight finish.
	draining atomic.Bool

	checker *health.Checker
}

// Stats is a snapshot of a backend, for metrics.
type Stats struct {
	Addr      string
	Healthy   bool // passes active checks (true without checks)
	Ejected   bool // passively ejected right now
	Draining  bool // drained through the admin API
	InFlight  int64
	Conns     int64
	Ejections uint64
}

func (b *Backend) available(now int64) bool {
	return b.Weight > 0 && b.up.Load() && !b.draining.Load() && now >= b.ejectedUntil.Load()
}

// Pool is a named upstream: backends, a balancer, a connection pool and the
// retry and ejection rules. It implements [http.RoundTripper]. A Pool is
// safe for concurrent use.
type Pool struct {
	Name string

	cfg       config.Upstream
	backends  []*Backend
	byAddr    map[string]*Backend
	balancer  balancer
	transport http.RoundTripper
	scheme    string
	logger    *slog.Logger
	now       func() time.Time

	inFlight        atomic.Int64
	retriesInFlight atomic.Int64
	closeOnce       sync.Once

	// direct holds the idle connections of requests forwarded without the
	// transport (see [Pool.DirectConn]).
	direct directIdle
	// directOK caches [Pool.exchangeCapable].
	directOK bool
	// noDirect is set by [WithoutDirect].
	noDirect bool
}

// Option configures [New].
type Option func(*Pool)

// WithTransport replaces the pool's HTTP transport, for tests and
// benchmarks that stub the backends out.
func WithTransport(rt http.RoundTripper) Option {
	return func(p *Pool) { p.transport = rt }
}

// WithoutDirect sends every request of the pool through its HTTP
// transport, with no direct connections, for tests that compare the two.
func WithoutDirect() Option {
	return func(p *Pool) { p.noDirect = true }
}

// New builds a pool from a validated upstream configuration. Call
// [Pool.Start] to begin active health checks and [Pool.Close] when the pool
// is replaced.
func New(cfg config.Upstream, logger *slog.Logger, opts ...Option) (*Pool, error) {
	p := &Pool{
		Name:   cfg.Name,
		cfg:    cfg,
		byAddr: make(map[string]*Backend, len(cfg.Backends)),
		scheme: "http",
		logger: logger.With("pool", cfg.Name),
		now:    time.Now,
	}
	if cfg.TLS {
		p.scheme = "https"
	}
	for _, bc := range cfg.Backends {
		b := &Backend{Addr: bc.Address, Weight: bc.BackendWeight()}
		b.up.Store(true)
		p.backends = append(p.backends, b)
		p.byAddr[b.Addr] = b
	}

	switch cfg.Balance {
	case "least_request":
		p.balancer = leastRequest{}
	case "hash":
		ch, err := newConsistentHash(p.backends, cfg.HashKey)
		if err != nil {
			return nil, fmt.Errorf("upstream %q: %w", cfg.Name, err)
		}
		p.balancer = ch
	default:
		p.balancer = newRoundRobin(p.backends)
	}

	p.transport = p.newTransport()
	for _, o := range opts {
		o(p)
	}
	p.directOK = p.exchangeCapable()
	return p, nil
}

// Inherit copies the health and ejection state of backends that old also
// has (same address). A reload then sends no traffic to a backend known to
// be down and keeps its ejections. Call it before [Pool.Start].
func (p *Pool) Inherit(old *Pool) {
	for _, b := range p.backends {
		ob := old.byAddr[b.Addr]
		if ob == nil {
			continue
		}
		if old.cfg.HealthCheck != nil && p.cfg.HealthCheck != nil {
			b.up.Store(ob.up.Load())
		}
		b.ejectedUntil.Store(ob.ejectedUntil.Load())
		b.ejections.Store(ob.ejections.Load())
		b.draining.Store(ob.draining.Load())
	}
}

func (p *Pool) newTransport() *http.Transport {
	dialer := &net.Dialer{Timeout: p.cfg.ConnectTimeout.D(), KeepAlive: 30 * time.Second}
	t := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return p.dial(ctx, dialer, network, addr)
		},
		MaxIdleConnsPerHost:   p.cfg.MaxIdlePerBackend,
		IdleConnTimeout:       p.cfg.IdleTimeout.D(),
		ResponseHeaderTimeout: p.cfg.ResponseHeaderTimeout.D(),
		TLSHandshakeTimeout:   p.cfg.ConnectTimeout.D(),
		ExpectContinueTimeout: time.Second,
		// The proxy forwards the client's Accept-Encoding as it is and
		// must not decompress what the backend sends.
		DisableCompression: true,
		ForceAttemptHTTP2:  p.cfg.TLS,
	}
	if p.cfg.TLS {
		// #nosec G402 -- an operator opts in per upstream for backends with
		// self-signed certificates.
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: p.cfg.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
	}
	if p.cfg.Protocol == "h2c" {
		t.Protocols = new(http.Protocols)
		t.Protocols.SetUnencryptedHTTP2(true)
	}
	return t
}

// connectError marks a failure to open a connection to a backend. It
// indicates an unreachable backend rather than a slow one or a connection
// broken mid-request.
type connectError struct{ err error }

func (e *connectError) Error() string { return e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// IsConnectError reports whether err is a failure to connect to a backend.
func IsConnectError(err error) bool {
	var ce *connectError
	return errors.As(err, &ce)
}

func (p *Pool) dial(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error) {
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		if ctx.Err() != nil {
			// The request ended during the dial. The failure is not
			// the backend's, so it must not count toward ejection.
			return nil, err
		}
		return nil, &connectError{err: err}
	}
	b := p.byAddr[addr]
	if b == nil {
		return c, nil
	}
	b.conns.Add(1)
	return &countedConn{Conn: c, backend: b}, nil
}

// countedConn decrements its backend's connection count once on Close.
type countedConn struct {
	net.Conn
	backend *Backend
	once    sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.backend.conns.Add(-1) })
	return c.Conn.Close()
}

func (p *Pool) newChecker(b *Backend, hc *config.HealthCheck) *health.Checker {
	var probe health.Probe
	if hc.Type == "tcp" {
		probe = health.TCPProbe(b.Addr)
	} else {
		probe = health.HTTPProbe{Address: b.Addr, Path: hc.Path, Expect: hc.ExpectStatus, TLS: p.cfg.TLS || hc.TLS}.Probe()
	}
	cfg := health.Config{Interval: hc.Interval.D(), Timeout: hc.Timeout.D(), Rise: hc.Rise, Fall: hc.Fall}
	return health.New(cfg, b.up.Load(), probe, func(ch health.Change) {
		b.up.Store(ch.Healthy)
		if ch.Healthy {
			p.logger.Info("backend marked up", "backend", b.Addr)
		} else {
			p.logger.Warn("backend marked down", "backend", b.Addr, "err", ch.Err)
		}
	})
}

// Start begins active health checks, if configured. Each checker starts
// from the backend's current state: up for a new pool, or what
// [Pool.Inherit] copied.
func (p *Pool) Start() {
	p.direct.startExpiry(p.now, p.cfg.IdleTimeout.D())
	hc := p.cfg.HealthCheck
	if hc == nil {
		return
	}
	for _, b := range p.backends {
		b.checker = p.newChecker(b, hc)
		b.checker.Start()
	}
}

// Close stops health checks and closes idle connections. Requests in flight
// finish on their connections.
func (p *Pool) Close() {
	p.closeOnce.Do(func() {
		for _, b := range p.backends {
			if b.checker != nil {
				b.checker.Stop()
			}
		}
		if t, ok := p.transport.(interface{ CloseIdleConnections() }); ok {
			t.CloseIdleConnections()
		}
		p.direct.close()
	})
}

// Backends returns the pool's backends in configuration order.
func (p *Pool) Backends() []*Backend { return p.backends }

// ErrBackendNotFound is returned by [Pool.SetDraining] for an address that
// is not one of the pool's backends.
var ErrBackendNotFound = errors.New("upstream: backend not found")

// SetDraining drains the backend at addr (no new requests, requests in
// flight finish) or, with false, puts it back in rotation.
func (p *Pool) SetDraining(addr string, draining bool) error {
	b := p.byAddr[addr]
	if b == nil {
		return fmt.Errorf("drain %s in upstream %q: %w", addr, p.Name, ErrBackendNotFound)
	}
	if b.draining.Swap(draining) != draining {
		p.logger.Info("backend drain changed", "backend", addr, "draining", draining)
	}
	return nil
}

// Stats returns a snapshot of every backend.
func (p *Pool) Stats() []Stats {
	now := p.now().UnixNano()
	out := make([]Stats, len(p.backends))
	for i, b := range p.backends {
		out[i] = Stats{
			Addr:      b.Addr,
			Healthy:   b.up.Load(),
			Ejected:   now < b.ejectedUntil.Load(),
			InFlight:  b.inFlight.Load(),
			Conns:     b.conns.Load(),
			Ejections: b.ejections.Load(),
			Draining:  b.draining.Load(),
		}
	}
	return out
}

// recordResult feeds passive ejection: failed counts a connect failure or a
// 5xx response, anything else resets the count.
func (p *Pool) recordResult(b *Backend, failed bool) {
	if !failed {
		b.failures.Store(0)
		return
	}
	limit := int64(p.cfg.Outlier.ConsecutiveFailures)
	if b.failures.Add(1) < limit {
		return
	}
	b.failures.Store(0)
	until := p.now().Add(p.cfg.Outlier.Cooldown.D())
	b.ejectedUntil.Store(until.UnixNano())
	b.ejections.Add(1)
	p.logger.Warn("backend ejected", "backend", b.Addr, "consecutive_failures", limit, "cooldown", p.cfg.Outlier.Cooldown.D())
}

// Attempt records how the pool served one request. The proxy stores one in
// the request context with [WithAttempt]; the pool fills it in.
type Attempt struct {
	Backend string // the backend that produced the response or last error
	Retries int
}

type attemptKey struct{}

// WithAttempt returns a copy of ctx that carries a.
func WithAttempt(ctx context.Context, a *Attempt) context.Context {
	return context.WithValue(ctx, attemptKey{}, a)
}

func attemptFrom(ctx context.Context) *Attempt {
	a, _ := ctx.Value(attemptKey{}).(*Attempt)
	return a
}

// RoundTrip sends req to a backend picked by the balancer. When a backend
// fails before it returns response headers, and the request may be retried
// (see [Retryable]), it tries another backend, up to the configured retries
// and within the retry budget. Because the response is returned only after
// its headers arrive, a retry never follows a byte sent to the client.
func (p *Pool) RoundTrip(req *http.Request) (*http.Response, error) {
	n := p.inFlight.Add(1)
	if max := int64(p.cfg.MaxRequests); max > 0 && n > max {
		p.inFlight.Add(-1)
		return nil, ErrOverloaded
	}
	release := func() { p.inFlight.Add(-1) }

	attempt := attemptFrom(req.Context())
	if attempt == nil {
		attempt = &Attempt{}
	}
	var tried []*Backend
	now := p.now().UnixNano()
	skip := func(b *Backend) bool {
		if !b.available(now) {
			return true
		}
		for _, t := range tried {
			if t == b {
				return true
			}
		}
		return false
	}

	var lastErr error
	heldRetry := false
	releaseRetry := func() {
		if heldRetry {
			p.retriesInFlight.Add(-1)
			heldRetry = false
		}
	}
	for try := 0; ; try++ {
		b := p.balancer.pick(req, p.backends, skip)
		if b == nil {
			releaseRetry()
			release()
			if lastErr != nil {
				return nil, lastErr
			}
			return nil, ErrNoBackend
		}
		tried = append(tried, b)
		attempt.Backend = b.Addr

		out := req
		if try > 0 {
			out = req.Clone(req.Context())
			if req.GetBody != nil {
				body, err := req.GetBody()
				if err != nil {
					release()
					return nil, fmt.Errorf("upstream: replay request body: %w", err)
				}
				out.Body = body
			}
		}
		out.URL.Scheme = p.scheme
		out.URL.Host = b.Addr

		b.inFlight.Add(1)
		var resp *http.Response
		var err error
		if p.exchangeable(out) {
			resp, err = p.exchange(out, b)
		} else {
			resp, err = p.transport.RoundTrip(out)
		}
		releaseRetry()
		if err == nil {
			p.recordResult(b, resp.StatusCode >= 500)
			resp.Body = wrapBody(resp.Body, func() {
				b.inFlight.Add(-1)
				release()
			})
			return resp, nil
		}
		b.inFlight.Add(-1)
		if IsConnectError(err) {
			p.recordResult(b, true)
		}
		lastErr = err

		if try >= p.cfg.Retries || !Retryable(req, err) || !p.takeRetry() {
			release()
			return nil, err
		}
		heldRetry = true
		attempt.Retries++
		if p.logger.Enabled(req.Context(), slog.LevelDebug) {
			p.logger.Debug("retrying on another backend", "backend", b.Addr, "err", err)
		}
		now = p.now().UnixNano()
	}
}

// takeRetry reserves a retry from the budget. The caller holds the
// reservation until the retried attempt returns.
func (p *Pool) takeRetry() bool {
	allowed := p.inFlight.Load() * int64(p.cfg.RetryBudget.Percent) / 100
	if min := int64(p.cfg.RetryBudget.MinConcurrency); allowed < min {
		allowed = min
	}
	if p.retriesInFlight.Add(1) > allowed {
		p.retriesInFlight.Add(-1)
		return false
	}
	return true
}

// Retryable reports whether req may be sent again after err. The method
// must be idempotent (or the request must carry an Idempotency-Key), and the
// body must be replayable. The client must still be there, and err must not
// be a timeout, because a slow backend is likely slow for the next attempt
// too and a retry would double the wait.
func Retryable(req *http.Request, err error) bool {
	if req.Context().Err() != nil {
		return false
	}
	if !idempotent(req) {
		return false
	}
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled)
}

func idempotent(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	_, ok := req.Header["Idempotency-Key"]
	return ok
}

// wrapBody calls done once when body is closed. A 101 Switching Protocols
// body is also the writable backend connection, so the wrapper keeps
// io.Writer for the proxy's upgrade handling.
func wrapBody(body io.ReadCloser, done func()) io.ReadCloser {
	if rwc, ok := body.(io.ReadWriteCloser); ok {
		return &doneReadWriteCloser{ReadWriteCloser: rwc, done: done}
	}
	return &doneReadCloser{ReadCloser: body, done: done}
}

type doneReadCloser struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (d *doneReadCloser) Close() error {
	err := d.ReadCloser.Close()
	d.once.Do(d.done)
	return err
}

type doneReadWriteCloser struct {
	io.ReadWriteCloser
	once sync.Once
	done func()
}

func (d *doneReadWriteCloser) Close() error {
	err := d.ReadWriteCloser.Close()
	d.once.Do(d.done)
	return err
}
