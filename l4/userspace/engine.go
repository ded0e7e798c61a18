package userspace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidegate/tidegate/l4/proxyheader"
)

// Picker returns up to n real addresses for a connection from client to vip,
// in the order to try them, or nil when no real can take it. It is called
// once per accepted connection and must not block.
type Picker interface {
	Pick(client, vip netip.AddrPort, n int) []string
}

// VIP is the configuration of one virtual service as the engine serves it.
type VIP struct {
	Name           string
	Address        string // listen address, host:port
	ProxyVersion   int    // 1 or 2
	ConnectTimeout time.Duration
	// IdleTimeout closes a connection when no byte has moved in either
	// direction for this long. Zero disables it.
	IdleTimeout time.Duration
	// MaxConnections caps the connections open on the VIP. Zero means no cap.
	MaxConnections int
	// DialAttempts is how many reals are tried, in Picker order.
	DialAttempts int
	// TCPKeepAlive turns on TCP keep-alive on the client and the real
	// socket, with this idle time before the first probe and the kernel's
	// interval and probe count. Zero leaves keep-alive off, and then the
	// engine makes no keep-alive setsockopt call.
	TCPKeepAlive time.Duration
	Picker       Picker
}

// Engine accepts on every VIP and proxies each connection to a real. Its
// methods are safe for concurrent use.
type Engine struct {
	logger *slog.Logger
	m      *metrics
	ids    *proxyheader.IDSource
	pipes  *pipePool // empty splice pipes shared by all connections

	mu        sync.Mutex
	listeners map[string]*listener        // serving, by listen address
	pending   map[string]*net.TCPListener // bound by Prepare, not yet serving
	conns     map[*net.TCPConn]struct{}   // client and real sides, for Drain
	draining  bool                        // no new client connections
	forced    bool                        // Drain timed out and closed conns

	acceptWG sync.WaitGroup
	connWG   sync.WaitGroup

	// setups hands accepted connections to idle setup workers (see
	// setupWorker). It is unbuffered, so a send succeeds only when a worker
	// waits. quit is closed by Drain once no accept loop can send.
	setups   chan setup
	quit     chan struct{}
	quitOnce sync.Once
}

// setup is one accepted connection for serveConn.
type setup struct {
	l *listener
	v *VIP
	c *net.TCPConn
}

// setupWorkerIdle is how long a setup worker waits for the next connection
// before it exits.
const setupWorkerIdle = 10 * time.Second

type listener struct {
	ln     *net.TCPListener
	vip    atomic.Pointer[VIP]
	active atomic.Int64 // client connections open, checked against MaxConnections

	limitLog     logLimiter
	noRealLog    logLimiter
	dialLog      logLimiter
	keepAliveLog logLimiter
}

// New returns an engine with no listeners and registers its metrics with reg.
func New(logger *slog.Logger, reg prometheus.Registerer) (*Engine, error) {
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("register userspace engine metrics: %w", err)
	}
	return &Engine{
		logger:    logger,
		m:         m,
		ids:       proxyheader.NewIDSource(),
		pipes:     newPipePool(),
		listeners: map[string]*listener{},
		pending:   map[string]*net.TCPListener{},
		conns:     map[*net.TCPConn]struct{}{},
		setups:    make(chan setup),
		quit:      make(chan struct{}),
	}, nil
}

// Prepare binds every address in addrs that is not bound yet, so that a
// later [Engine.Update] cannot fail on a bind. It binds all of them or, on
// the first error, none.
func (e *Engine) Prepare(addrs []string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var bound []string
	for _, addr := range addrs {
		if e.listeners[addr] != nil || e.pending[addr] != nil {
			continue
		}
		ln, err := listenTCP(addr)
		if err != nil {
			for _, a := range bound {
				e.pending[a].Close()
				delete(e.pending, a)
			}
			return fmt.Errorf("listen on %s: %w", addr, err)
		}
		e.pending[addr] = ln.(*net.TCPListener)
		bound = append(bound, addr)
	}
	return nil
}

// listenTCP binds addr with Go's default TCP keep-alive off, which would
// otherwise cost four setsockopt calls on every accepted socket. The
// listener outlives reloads that change a VIP's TCPKeepAlive, so serveConn
// sets keep-alive per connection instead.
func listenTCP(addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	return lc.Listen(context.Background(), "tcp", addr)
}

// keepAliveConfig returns the keep-alive settings for a VIP's TCPKeepAlive:
// off for zero, else the idle time with the kernel's interval and count.
func keepAliveConfig(idle time.Duration) net.KeepAliveConfig {
	if idle <= 0 {
		return net.KeepAliveConfig{}
	}
	return net.KeepAliveConfig{Enable: true, Idle: idle, Interval: -1, Count: -1}
}

// Update makes the engine serve exactly vips. A VIP whose address is already
// served keeps its listener and its open connections and takes the new
// settings for new connections. Listeners of VIPs no longer present are
// closed, and their open connections run on until they end or Drain.
func (e *Engine) Update(vips []VIP) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.draining {
		return errors.New("update userspace engine: draining")
	}

	var errs []error
	keep := make(map[string]bool, len(vips))
	for i := range vips {
		v := vips[i]
		keep[v.Address] = true
		l := e.listeners[v.Address]
		if l == nil {
			ln := e.pending[v.Address]
			delete(e.pending, v.Address)
			if ln == nil {
				nl, err := listenTCP(v.Address)
				if err != nil {
					errs = append(errs, fmt.Errorf("listen on %s for vip %s: %w", v.Address, v.Name, err))
					continue
				}
				ln = nl.(*net.TCPListener)
			}
			l = &listener{ln: ln}
			l.vip.Store(&v)
			e.listeners[v.Address] = l
			e.acceptWG.Add(1)
			go e.acceptLoop(l)
			e.logger.Info("vip listening", "vip", v.Name, "address", ln.Addr().String(), "proxy_protocol", v.ProxyVersion)
			continue
		}
		l.vip.Store(&v)
	}

	for addr, l := range e.listeners {
		if !keep[addr] {
			e.logger.Info("vip listener closed", "vip", l.vip.Load().Name, "address", addr, "open_connections", l.active.Load())
			l.ln.Close()
			delete(e.listeners, addr)
		}
	}
	for addr, ln := range e.pending {
		ln.Close()
		delete(e.pending, addr)
	}
	return errors.Join(errs...)
}

// Addrs returns the bound address of each served VIP, keyed by the
// configured address, so callers that configured port 0 learn the port.
func (e *Engine) Addrs() map[string]net.Addr {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]net.Addr, len(e.listeners))
	for a, l := range e.listeners {
		out[a] = l.ln.Addr()
	}
	return out
}

// Drain closes every listener, waits for open connections to end until ctx
// ends, then closes the rest and returns ctx.Err().
func (e *Engine) Drain(ctx context.Context) error {
	e.mu.Lock()
	e.draining = true
	for addr, l := range e.listeners {
		l.ln.Close()
		delete(e.listeners, addr)
	}
	for addr, ln := range e.pending {
		ln.Close()
		delete(e.pending, addr)
	}
	e.mu.Unlock()
	e.acceptWG.Wait()
	e.quitOnce.Do(func() { close(e.quit) })

	done := make(chan struct{})
	go func() {
		e.connWG.Wait()
		e.pipes.close()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}

	e.mu.Lock()
	e.forced = true
	n := len(e.conns)
	for c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
	e.logger.Warn("drain timeout, closed open connections", "sockets", n)
	<-done
	return ctx.Err()
}

// trackClient registers an accepted connection for Drain and reports false
// when the engine already drains, in which case the caller must reject c.
func (e *Engine) trackClient(c *net.TCPConn) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.draining {
		return false
	}
	e.conns[c] = struct{}{}
	return true
}

// trackReal registers the real side of a connection for Drain. A connection
// accepted before Drain began is still set up while Drain waits, so this
// reports false only after Drain has closed every connection, in which case
// the caller must close c.
func (e *Engine) trackReal(c *net.TCPConn) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.forced {
		return false
	}
	e.conns[c] = struct{}{}
	return true
}

func (e *Engine) untrack(c *net.TCPConn) {
	e.mu.Lock()
	delete(e.conns, c)
	e.mu.Unlock()
}

// Accept backoff bounds. EMFILE and ENFILE clear only when connections
// close, so retrying at once would spin a core and flood the log.
const (
	minAcceptDelay = 5 * time.Millisecond
	maxAcceptDelay = time.Second
)

func (e *Engine) acceptLoop(l *listener) {
	defer e.acceptWG.Done()
	var delay time.Duration
	for {
		c, err := l.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			v := l.vip.Load()
			delay = min(max(2*delay, minAcceptDelay), maxAcceptDelay)
			e.m.acceptErrors.WithLabelValues(v.Name).Inc()
			e.logger.Warn("accept failed, retrying", "vip", v.Name, "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0

		v := l.vip.Load()
		e.m.accepted.WithLabelValues(v.Name).Inc()
		if v.MaxConnections > 0 && l.active.Load() >= int64(v.MaxConnections) {
			e.reject(v, c, rejectLimit)
			if ok, skipped := l.limitLog.allow(); ok {
				e.logger.Warn("connection limit reached, rejecting", "vip", v.Name, "max_connections", v.MaxConnections, "suppressed", skipped)
			}
			continue
		}
		if !e.trackClient(c) {
			e.reject(v, c, rejectDraining)
			continue
		}

		// Only this goroutine adds, so the check above cannot be overtaken.
		l.active.Add(1)
		e.connWG.Add(1)
		select {
		case e.setups <- setup{l, v, c}:
		default:
			go e.setupWorker(setup{l, v, c})
		}
	}
}

// setupWorker runs serveConn for s and then for each connection the accept
// loops hand it, until none comes for setupWorkerIdle or Drain starts.
// Dialling grows the goroutine's stack, so reusing the goroutine saves a
// stack copy per connection.
func (e *Engine) setupWorker(s setup) {
	e.serveConn(s.l, s.v, s.c)
	idle := time.NewTimer(setupWorkerIdle)
	defer idle.Stop()
	for {
		select {
		case s := <-e.setups:
			e.serveConn(s.l, s.v, s.c)
			idle.Reset(setupWorkerIdle)
		case <-idle.C:
			return
		case <-e.quit:
			return
		}
	}
}

// reject closes c at once with a reset, so the client does not wait on a
// connection that will carry nothing, and counts it.
func (e *Engine) reject(v *VIP, c *net.TCPConn, reason string) {
	_ = c.SetLinger(0)
	c.Close()
	e.m.rejected.WithLabelValues(v.Name, reason).Inc()
}
