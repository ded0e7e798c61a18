package upstream

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DirectConn is a cleartext HTTP/1.1 connection to one backend, for
// callers that write requests and read responses themselves instead of
// going through [Pool.RoundTrip]. The caller owns it between
// [Pool.DirectConn] and [Pool.ReleaseDirect].
type DirectConn struct {
	net.Conn
	// R reads the connection. Its buffer belongs to the connection and
	// stays with it while it is idle in the pool.
	R *bufio.Reader
	// Reused is true when the connection served an earlier request, so a
	// failure before the first response byte may mean the backend closed
	// it while it was idle.
	Reused  bool
	Backend *Backend

	idleSince time.Time
	// raw, pollFunc, pollFD and spoke serve peerSpoke. raw is nil when
	// the connection has no file descriptor.
	raw      syscall.RawConn
	pollFunc func(uintptr)
	pollFD   [1]unix.PollFd
	spoke    bool
}

// directIdle holds the idle direct connections of a pool, per backend,
// newest last.
type directIdle struct {
	mu     sync.Mutex
	conns  map[*Backend][]*DirectConn
	closed bool
	stop   chan struct{}
}

const directReadBuffer = 4 << 10

// DirectCapable reports whether the fast path may send requests of p on
// direct connections: [Pool.exchangeCapable] holds, and the balancer does
// not need the request to pick, since the fast path picks with
// [Pool.Pick].
func (p *Pool) DirectCapable() bool {
	if _, hash := p.balancer.(*consistentHash); hash {
		return false
	}
	return p.exchangeCapable()
}

// exchangeCapable reports whether requests of p may bypass its transport:
// the backends speak cleartext HTTP/1.1, no test replaced the transport,
// and [WithoutDirect] was not given.
func (p *Pool) exchangeCapable() bool {
	if p.cfg.TLS || p.cfg.Protocol == "h2c" || p.noDirect {
		return false
	}
	_, std := p.transport.(*http.Transport)
	return std
}

// Admit counts a request against max_requests. It returns [ErrOverloaded]
// when the pool is full. Otherwise the caller calls [Pool.Done] once the
// request ends.
func (p *Pool) Admit() error {
	n := p.inFlight.Add(1)
	if max := int64(p.cfg.MaxRequests); max > 0 && n > max {
		p.inFlight.Add(-1)
		return ErrOverloaded
	}
	return nil
}

// Done ends a request that [Pool.Admit] counted.
func (p *Pool) Done() { p.inFlight.Add(-1) }

// Pick chooses an available backend that is not in tried, or returns nil
// when none is left. It serves the balancers that do not read the request.
func (p *Pool) Pick(tried []*Backend) *Backend {
	now := p.now().UnixNano()
	return p.balancer.pick(nil, p.backends, func(b *Backend) bool {
		if !b.available(now) {
			return true
		}
		for _, t := range tried {
			if t == b {
				return true
			}
		}
		return false
	})
}

// StartRequest and EndRequest count a request in flight on b, for the
// least-request balancer and the status page.
func (b *Backend) StartRequest() { b.inFlight.Add(1) }

// EndRequest ends what StartRequest began.
func (b *Backend) EndRequest() { b.inFlight.Add(-1) }

// Observe feeds passive ejection with the outcome of one request to b:
// failed is a connect failure or a 5xx response.
func (p *Pool) Observe(b *Backend, failed bool) { p.recordResult(b, failed) }

// TakeRetry reserves a retry from the pool's retry budget. The caller
// hands it back with [Pool.ReturnRetry] when the retried attempt ends.
func (p *Pool) TakeRetry() bool { return p.takeRetry() }

// ReturnRetry releases a retry that [Pool.TakeRetry] reserved.
func (p *Pool) ReturnRetry() { p.retriesInFlight.Add(-1) }

// Retries returns the configured number of retries.
func (p *Pool) Retries() int { return p.cfg.Retries }

// ResponseHeaderTimeout returns how long a backend may take to send the
// head of its response.
func (p *Pool) ResponseHeaderTimeout() time.Duration { return p.cfg.ResponseHeaderTimeout.D() }

// DirectConn returns an idle connection to b, or dials a new one within the
// connect timeout. A dial failure is a connect error (see
// [IsConnectError]).
func (p *Pool) DirectConn(ctx context.Context, b *Backend) (*DirectConn, error) {
	for {
		c := p.direct.take(b, p.now(), p.cfg.IdleTimeout.D())
		if c == nil {
			break
		}
		if !c.peerSpoke() {
			return c, nil
		}
		_ = c.Close()
	}
	return p.dialDirect(ctx, b)
}

// peerSpoke reports whether the backend sent bytes or closed the
// connection while it was idle. Bytes that arrive before a request are not
// its response: a body after a HEAD response or beyond Content-Length
// would otherwise be read as the response to the next request. Nothing
// reads an idle connection, so this checks with one poll that does not
// wait, which is what net/http's transport learns from its background
// read.
func (c *DirectConn) peerSpoke() bool {
	if c.raw == nil {
		return false
	}
	if err := c.raw.Control(c.pollFunc); err != nil {
		return true
	}
	return c.spoke
}

// poll is the body of peerSpoke, bound once per connection in pollFunc so
// that the check does not allocate. A close makes the socket readable too.
func (c *DirectConn) poll(fd uintptr) {
	c.pollFD[0] = unix.PollFd{Fd: int32(fd), Events: pollEvents}
	n, err := unix.Poll(c.pollFD[:], 0)
	c.spoke = err == nil && n > 0 && c.pollFD[0].Revents != 0
}

// DialDirect opens a new connection to b, skipping the idle ones.
func (p *Pool) DialDirect(ctx context.Context, b *Backend) (*DirectConn, error) {
	return p.dialDirect(ctx, b)
}

func (p *Pool) dialDirect(ctx context.Context, b *Backend) (*DirectConn, error) {
	d := net.Dialer{Timeout: p.cfg.ConnectTimeout.D(), KeepAlive: 30 * time.Second}
	c, err := p.dial(ctx, &d, "tcp", b.Addr)
	if err != nil {
		return nil, err
	}
	dc := &DirectConn{Conn: c, R: bufio.NewReaderSize(c, directReadBuffer), Backend: b}
	inner := c
	if cc, ok := inner.(*countedConn); ok {
		inner = cc.Conn
	}
	if sc, ok := inner.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			dc.raw = raw
			dc.pollFunc = dc.poll
		}
	}
	return dc, nil
}

// GrowReader replaces R with a reader twice its size, at most max bytes,
// that first returns the bytes buffered in R. It reports false when R already
// has max bytes. [Pool.ReleaseDirect] returns the connection to the
// default size.
func (c *DirectConn) GrowReader(max int) bool {
	size := c.R.Size()
	if size >= max {
		return false
	}
	buffered, _ := c.R.Peek(c.R.Buffered())
	buffered = bytes.Clone(buffered)
	c.R = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(buffered), c.Conn), min(2*size, max))
	return true
}

// ReleaseDirect returns c to the idle connections when reusable is true
// and there is room, and closes it otherwise.
func (p *Pool) ReleaseDirect(c *DirectConn, reusable bool) {
	if reusable && c.R.Buffered() == 0 {
		if c.R.Size() > directReadBuffer {
			// The larger reader read a head that did not fit. Its
			// first read took all the bytes carried over from the
			// old reader, so a new reader loses nothing.
			c.R = bufio.NewReaderSize(c.Conn, directReadBuffer)
		}
		// The exchange's deadlines stay set: nothing reads an idle
		// connection (peerSpoke polls without the runtime's poller),
		// and every user sets its deadlines before its first read or
		// write. Clearing them would cost two timer updates per request.
		c.Reused = true
		c.idleSince = p.now()
		if p.direct.put(c, p.cfg.MaxIdlePerBackend) {
			return
		}
	}
	_ = c.Close()
}

func (d *directIdle) take(b *Backend, now time.Time, idleTimeout time.Duration) *DirectConn {
	d.mu.Lock()
	list := d.conns[b]
	var stale []*DirectConn
	var c *DirectConn
	for len(list) > 0 {
		last := list[len(list)-1]
		list[len(list)-1] = nil
		list = list[:len(list)-1]
		if idleTimeout > 0 && now.Sub(last.idleSince) >= idleTimeout {
			stale = append(stale, last)
			continue
		}
		c = last
		break
	}
	if d.conns != nil {
		d.conns[b] = list
	}
	d.mu.Unlock()
	for _, s := range stale {
		_ = s.Close()
	}
	return c
}

func (d *directIdle) put(c *DirectConn, max int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || max <= 0 || len(d.conns[c.Backend]) >= max {
		return false
	}
	if d.conns == nil {
		d.conns = map[*Backend][]*DirectConn{}
	}
	d.conns[c.Backend] = append(d.conns[c.Backend], c)
	return true
}

// expire closes connections idle for idleTimeout or longer. The oldest are
// first in each list.
func (d *directIdle) expire(now time.Time, idleTimeout time.Duration) {
	var old []*DirectConn
	d.mu.Lock()
	for b, list := range d.conns {
		n := 0
		for n < len(list) && now.Sub(list[n].idleSince) >= idleTimeout {
			old = append(old, list[n])
			n++
		}
		if n > 0 {
			d.conns[b] = append(list[:0], list[n:]...)
		}
	}
	d.mu.Unlock()
	for _, c := range old {
		_ = c.Close()
	}
}

// startExpiry closes idle connections once they pass idleTimeout, so a
// pool without traffic does not keep sockets the backends have closed.
func (d *directIdle) startExpiry(now func() time.Time, idleTimeout time.Duration) {
	if idleTimeout <= 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || d.stop != nil {
		return
	}
	d.stop = make(chan struct{})
	stop := d.stop
	go func() {
		t := time.NewTicker(max(idleTimeout/2, 100*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-t.C:
				d.expire(now(), idleTimeout)
			case <-stop:
				return
			}
		}
	}()
}

// close closes every idle connection and keeps later ones out.
func (d *directIdle) close() {
	d.mu.Lock()
	d.closed = true
	conns := d.conns
	d.conns = nil
	if d.stop != nil {
		close(d.stop)
		d.stop = nil
	}
	d.mu.Unlock()
	for _, list := range conns {
		for _, c := range list {
			_ = c.Close()
		}
	}
}
