package userspace

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidegate/tidegate/l4/proxyheader"
)

// serveConn sets up one accepted client connection: it picks a real, dials
// it and writes the PROXY header. Then it starts one goroutine per copy
// direction and returns, so the stack that the dial grew is not kept for
// the life of the connection. The direction that ends last closes the
// flow.
func (e *Engine) serveConn(l *listener, v *VIP, client *net.TCPConn) {
	f := &flow{e: e, l: l, v: v, client: client, start: time.Now()}
	f.activeVIP = e.m.active.WithLabelValues(v.Name)
	f.activeVIP.Inc()

	if v.TCPKeepAlive > 0 {
		err := client.SetKeepAliveConfig(keepAliveConfig(v.TCPKeepAlive))
		if ok, skipped := l.keepAliveLog.allow(); err != nil && ok {
			e.logger.Warn("set client tcp keep-alive failed", "vip", v.Name, "err", err, "suppressed", skipped)
		}
	}

	f.id = e.ids.Next()
	f.src = client.RemoteAddr().(*net.TCPAddr).AddrPort()
	// The accepted socket's local address is the VIP the client reached,
	// which differs from the listen address when that is a wildcard.
	dst := client.LocalAddr().(*net.TCPAddr).AddrPort()

	reals := v.Picker.Pick(f.src, dst, v.DialAttempts)
	if len(reals) == 0 {
		e.reject(v, client, rejectNoReal)
		if ok, skipped := l.noRealLog.allow(); ok {
			e.logger.Warn("no usable real, rejecting", "vip", v.Name, "suppressed", skipped)
		}
		f.release()
		return
	}

	hdr, err := proxyheader.Build(v.ProxyVersion, f.src, dst, f.id)
	if err != nil {
		// Build fails only for an invalid version or address. Config validation
		// checks the version and the kernel supplies the addresses.
		e.logger.Error("build proxy header failed", "vip", v.Name, "conn_id", f.id.String(), "err", err)
		e.reject(v, client, rejectDialFailed)
		f.release()
		return
	}
	f.server, f.realAddr = e.connectReal(f, reals, hdr)
	if f.server == nil {
		e.reject(v, client, rejectDialFailed)
		f.release()
		return
	}

	e.m.realConns.WithLabelValues(v.Name, f.realAddr).Inc()
	f.activeReal = e.m.realActive.WithLabelValues(v.Name, f.realAddr)
	f.activeReal.Inc()
	if e.logger.Enabled(context.Background(), slog.LevelDebug) {
		e.logger.LogAttrs(context.Background(), slog.LevelDebug, "connection opened",
			slog.String("vip", v.Name), slog.String("conn_id", f.id.String()),
			slog.String("client", f.src.String()), slog.String("real", f.realAddr))
	}
	f.run()
}

// connectReal dials the reals in order and writes hdr to the first that
// accepts, in one write with the bytes the client has already sent (see
// readAvailable). It records those bytes in f and returns nil when every
// attempt failed.
func (e *Engine) connectReal(f *flow, reals []string, hdr []byte) (*net.TCPConn, string) {
	l, v := f.l, f.v
	d := net.Dialer{
		Timeout:         v.ConnectTimeout,
		KeepAlive:       -1,
		KeepAliveConfig: keepAliveConfig(v.TCPKeepAlive),
	}
	// out is hdr followed by the client's first bytes. The client is read
	// once, after the first dial that succeeds, so that a request sent
	// right after the connect has arrived, and every later attempt sends
	// the same bytes.
	var out []byte
	var buf *[]byte
	defer func() {
		if buf != nil {
			copyBuffers.Put(buf)
		}
	}()
	for _, addr := range reals {
		t0 := time.Now()
		// NOTE: Dialer.DialTCP would skip the resolver, but with a zero
		// local address it binds before connecting, and bind cannot reuse
		// TIME_WAIT ports as connect does (5x the CPU in the XDP bench).
		c, err := d.Dial("tcp", addr)
		e.m.dialSeconds.WithLabelValues(v.Name, addr).Observe(time.Since(t0).Seconds())
		if err == nil {
			server := c.(*net.TCPConn)
			if out == nil {
				buf = copyBuffers.Get().(*[]byte)
				n := copy(*buf, hdr)
				f.early, f.earlyErr = readAvailable(f.client, (*buf)[n:])
				out = (*buf)[:n+f.early]
			}
			if err = writeHeader(server, out, v.ConnectTimeout); err == nil {
				if e.trackReal(server) {
					return server, addr
				}
				server.Close()
				return nil, ""
			}
			server.Close()
		}
		e.m.dialFailures.WithLabelValues(v.Name, addr).Inc()
		if ok, skipped := l.dialLog.allow(); ok {
			e.logger.Warn("dial real failed", "vip", v.Name, "real", addr, "conn_id", f.id.String(), "err", err, "suppressed", skipped)
		}
	}
	return nil, ""
}

// writeHeader writes the PROXY header, and the client bytes that follow it
// in b, to a freshly connected real. b is at most copyBufferSize bytes,
// which a live peer takes within two round trips (the initial congestion
// window is ten segments), so the deadline only guards against a peer
// that is already gone.
func writeHeader(c *net.TCPConn, b []byte, timeout time.Duration) error {
	if timeout > 0 {
		_ = c.SetWriteDeadline(time.Now().Add(timeout))
	}
	if _, err := c.Write(b); err != nil {
		return err
	}
	return c.SetWriteDeadline(time.Time{})
}

// copyBufferSize is the size of the buffer that the first bytes of each
// direction are read into. On Linux a read that fills it switches the
// direction to splice for the rest of the connection.
const copyBufferSize = 16 << 10

// copyBuffers holds *[]byte of copyBufferSize. A direction takes one only
// after its source is readable and returns it before it waits again.
var copyBuffers = sync.Pool{New: func() any {
	b := make([]byte, copyBufferSize)
	return &b
}}

// flow is one accepted client connection and, once connectReal succeeds,
// its connection to a real.
type flow struct {
	e      *Engine
	l      *listener
	v      *VIP
	client *net.TCPConn
	server *net.TCPConn // nil until connectReal succeeds

	id       proxyheader.ID
	src      netip.AddrPort
	realAddr string
	start    time.Time

	activeVIP, activeReal prometheus.Gauge

	// Client bytes that connectReal sent with the PROXY header, and the
	// error of that read, which the client to real direction reports.
	early    int
	earlyErr error

	moved     atomic.Uint64 // bytes both copies reported, for the idle watch
	idled     atomic.Bool
	stopWatch func()
	eofs      atomic.Int32 // directions that ended with EOF from their source
	ended     atomic.Int32 // directions that ended in any way

	// Written by each direction before it counts itself in ended, and
	// read by the direction that ends last.
	up, down       int64 // bytes client to real, real to client
	upErr, downErr error
}

// Why a connection ended, the "end" attribute of the close log line.
const (
	endClosed = "closed" // both sides sent FIN
	endIdle   = "idle_timeout"
	endError  = "error" // a reset or another socket error on either side
)

// run copies client to server and server to client, each in its own
// goroutine, until both sides have sent FIN, passing each FIN on with
// CloseWrite. An error on either side, or no byte moving in either
// direction for the VIP's idle timeout, closes both.
func (f *flow) run() {
	if idle := f.v.IdleTimeout; idle > 0 {
		f.stopWatch = watchIdle(f.client, idle, &f.moved, func() {
			f.idled.Store(true)
			abort(f.client, f.server)
		})
	}
	up := f.e.m.bytes.WithLabelValues(f.v.Name, f.realAddr, "client_to_real")
	down := f.e.m.bytes.WithLabelValues(f.v.Name, f.realAddr, "real_to_client")
	if f.early > 0 {
		up.Add(float64(f.early))
		f.moved.Add(uint64(f.early))
	}
	if f.earlyErr != nil {
		f.up, f.upErr = int64(f.early), f.earlyErr
		abort(f.client, f.server)
		f.endDirection()
	} else {
		go func() {
			n, err := f.copy(f.server, f.client, up)
			f.up, f.upErr = int64(f.early)+n, err
			f.endDirection()
		}()
	}
	go func() {
		f.down, f.downErr = f.copy(f.client, f.server, down)
		f.endDirection()
	}()
}

func (f *flow) copy(dst, src *net.TCPConn, count prometheus.Counter) (int64, error) {
	n, err := copyHalf(dst, src, f.e.pipes, &f.moved, count, f.lastEOF)
	if err != nil {
		abort(f.client, f.server)
	}
	return n, err
}

// lastEOF counts the calling direction as ended by EOF and reports whether
// the other one already was. The direction that reaches EOF second then
// skips its CloseWrite and lets close send that FIN, one shutdown call
// fewer. Its socket has no unread
// bytes, because the other direction read it to EOF, so the close sends a
// FIN and not a reset.
func (f *flow) lastEOF() bool {
	return f.eofs.Add(1) == 2
}

// endDirection closes the flow when both directions have ended.
func (f *flow) endDirection() {
	if f.ended.Add(1) < 2 {
		return
	}
	if f.stopWatch != nil {
		f.stopWatch()
	}
	end := endClosed
	switch {
	case f.idled.Load():
		end = endIdle
	case f.upErr != nil || f.downErr != nil:
		end = endError
	}
	f.server.Close()
	f.e.untrack(f.server)
	f.activeReal.Dec()

	// One line per connection, the L4 side of the access log: conn_id is the
	// UNIQUE_ID TLV value the real received.
	if f.e.logger.Enabled(context.Background(), slog.LevelInfo) {
		f.e.logger.LogAttrs(context.Background(), slog.LevelInfo, "connection closed",
			slog.String("vip", f.v.Name), slog.String("conn_id", f.id.String()),
			slog.String("client", f.src.String()), slog.String("real", f.realAddr),
			slog.Int64("bytes_in", f.up), slog.Int64("bytes_out", f.down),
			slog.Duration("duration", time.Since(f.start)), slog.String("end", end))
	}
	f.release()
}

// release closes the client side and gives back its slot in the VIP's
// connection count and in [Engine.Drain]'s wait.
func (f *flow) release() {
	f.client.Close()
	f.e.untrack(f.client)
	f.activeVIP.Dec()
	f.l.active.Add(-1)
	f.e.connWG.Done()
}

// watchIdle calls onIdle once when neither direction of the connection has
// moved a byte for idle. It samples progress every quarter of idle, so the
// connection closes between idle and 1.25 times idle after the last byte.
// Progress is the kernel's count of bytes received from and acknowledged by
// the client (see tcpProgress) plus moved, the bytes the copies reported.
// The returned function stops the watch.
func watchIdle(client *net.TCPConn, idle time.Duration, moved *atomic.Uint64, onIdle func()) (stop func()) {
	period := max(idle/4, 5*time.Millisecond)
	var (
		mu      sync.Mutex
		timer   *time.Timer
		stopped bool
		// The first sample is taken at the first check, not here, so a
		// connection shorter than period makes no TCP_INFO call. Bytes
		// that arrived before the watch began then count as progress at
		// that check, which still closes an idle connection within 1.25
		// times idle of its last byte.
		last       uint64
		lastChange = time.Now()
	)
	check := func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		now := time.Now()
		if p := tcpProgress(client) + moved.Load(); p != last {
			last, lastChange = p, now
		}
		if now.Sub(lastChange) >= idle {
			stopped = true
			onIdle()
			return
		}
		timer.Reset(period)
	}

	mu.Lock()
	timer = time.AfterFunc(period, check)
	mu.Unlock()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		timer.Stop()
	}
}

// abort closes both sockets, which ends any copy still blocked on them.
func abort(client, server *net.TCPConn) {
	client.Close()
	server.Close()
}

// logLimiter lets one log line through per second and counts the rest, for
// events that can repeat once per connection.
type logLimiter struct {
	next       atomic.Int64 // unix nanoseconds before which lines are suppressed
	suppressed atomic.Int64
}

func (l *logLimiter) allow() (ok bool, suppressed int64) {
	now := time.Now().UnixNano()
	next := l.next.Load()
	if now < next || !l.next.CompareAndSwap(next, now+int64(time.Second)) {
		l.suppressed.Add(1)
		return false, 0
	}
	return true, l.suppressed.Swap(0)
}
