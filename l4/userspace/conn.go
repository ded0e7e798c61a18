package userspace

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidegate/tidegate/l4/proxyheader"
)

// serveConn proxies one accepted client connection until both directions
// end.
func (e *Engine) serveConn(l *listener, v *VIP, client *net.TCPConn) {
	defer e.connWG.Done()
	defer l.active.Add(-1)
	defer e.untrack(client)
	defer client.Close()
	activeVIP := e.m.active.WithLabelValues(v.Name)
	activeVIP.Inc()
	defer activeVIP.Dec()

	if v.TCPKeepAlive > 0 {
		err := client.SetKeepAliveConfig(keepAliveConfig(v.TCPKeepAlive))
		if ok, skipped := l.keepAliveLog.allow(); err != nil && ok {
			e.logger.Warn("set client tcp keep-alive failed", "vip", v.Name, "err", err, "suppressed", skipped)
		}
	}

	start := time.Now()
	id := e.ids.Next()
	src := client.RemoteAddr().(*net.TCPAddr).AddrPort()
	// The accepted socket's local address is the VIP the client reached,
	// which differs from the listen address when that is a wildcard.
	dst := client.LocalAddr().(*net.TCPAddr).AddrPort()

	reals := v.Picker.Pick(src, dst, v.DialAttempts)
	if len(reals) == 0 {
		e.reject(v, client, rejectNoReal)
		if ok, skipped := l.noRealLog.allow(); ok {
			e.logger.Warn("no usable real, rejecting", "vip", v.Name, "suppressed", skipped)
		}
		return
	}

	hdr, err := proxyheader.Build(v.ProxyVersion, src, dst, id)
	if err != nil {
		// Build fails only for an invalid version or address. Config validation
		// checks the version and the kernel supplies the addresses.
		e.logger.Error("build proxy header failed", "vip", v.Name, "conn_id", id.String(), "err", err)
		e.reject(v, client, rejectDialFailed)
		return
	}
	server, realAddr := e.connectReal(l, v, reals, hdr, id)
	if server == nil {
		e.reject(v, client, rejectDialFailed)
		return
	}
	defer e.untrack(server)
	defer server.Close()

	e.m.realConns.WithLabelValues(v.Name, realAddr).Inc()
	activeReal := e.m.realActive.WithLabelValues(v.Name, realAddr)
	activeReal.Inc()
	defer activeReal.Dec()
	if e.logger.Enabled(context.Background(), slog.LevelDebug) {
		e.logger.LogAttrs(context.Background(), slog.LevelDebug, "connection opened",
			slog.String("vip", v.Name), slog.String("conn_id", id.String()),
			slog.String("client", src.String()), slog.String("real", realAddr))
	}

	up := e.m.bytes.WithLabelValues(v.Name, realAddr, "client_to_real")
	down := e.m.bytes.WithLabelValues(v.Name, realAddr, "real_to_client")
	res := splice(client, server, e.pipes, v.IdleTimeout, up, down)

	// One line per connection, the L4 side of the access log: conn_id is the
	// UNIQUE_ID TLV value the real received.
	if e.logger.Enabled(context.Background(), slog.LevelInfo) {
		e.logger.LogAttrs(context.Background(), slog.LevelInfo, "connection closed",
			slog.String("vip", v.Name), slog.String("conn_id", id.String()),
			slog.String("client", src.String()), slog.String("real", realAddr),
			slog.Int64("bytes_in", res.up), slog.Int64("bytes_out", res.down),
			slog.Duration("duration", time.Since(start)), slog.String("end", res.end))
	}
}

// connectReal dials the reals in order and writes hdr to the first that
// accepts. It returns nil when every attempt failed.
func (e *Engine) connectReal(l *listener, v *VIP, reals []string, hdr []byte, id proxyheader.ID) (*net.TCPConn, string) {
	d := net.Dialer{
		Timeout:         v.ConnectTimeout,
		KeepAlive:       -1,
		KeepAliveConfig: keepAliveConfig(v.TCPKeepAlive),
	}
	for _, addr := range reals {
		t0 := time.Now()
		c, err := d.Dial("tcp", addr)
		e.m.dialSeconds.WithLabelValues(v.Name, addr).Observe(time.Since(t0).Seconds())
		if err == nil {
			server := c.(*net.TCPConn)
			if err = writeHeader(server, hdr, v.ConnectTimeout); err == nil {
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
			e.logger.Warn("dial real failed", "vip", v.Name, "real", addr, "conn_id", id.String(), "err", err, "suppressed", skipped)
		}
	}
	return nil, ""
}

// writeHeader writes the PROXY header before any client byte. A header is at
// most 107 bytes, which fits the send buffer of a fresh connection, so the
// deadline only guards against a peer that is already gone.
func writeHeader(c *net.TCPConn, hdr []byte, timeout time.Duration) error {
	if timeout > 0 {
		_ = c.SetWriteDeadline(time.Now().Add(timeout))
	}
	if _, err := c.Write(hdr); err != nil {
		return err
	}
	return c.SetWriteDeadline(time.Time{})
}

type spliceResult struct {
	up, down int64 // bytes client to real, real to client
	end      string
}

// Why a connection ended, the "end" attribute of the close log line.
const (
	endClosed = "closed" // both sides sent FIN
	endIdle   = "idle_timeout"
	endError  = "error" // a reset or another socket error on either side
)

// splice copies client to server and server to client until both sides have
// sent FIN, passing each FIN on with CloseWrite. An error on either side, or
// no byte moving in either direction for idle, closes both. The caller
// closes both sockets when splice returns.
func splice(client, server *net.TCPConn, pipes *pipePool, idle time.Duration, up, down prometheus.Counter) spliceResult {
	var moved atomic.Uint64
	var idled atomic.Bool
	stopWatch := func() {}
	if idle > 0 {
		stopWatch = watchIdle(client, idle, &moved, func() {
			idled.Store(true)
			abort(client, server)
		})
	}

	// The direction that reaches EOF second skips its CloseWrite: the
	// caller's Close sends that FIN, one shutdown call fewer. Its socket
	// has no unread bytes, because the other direction read it to EOF, so
	// the close sends a FIN and not a reset.
	var ended atomic.Int32
	lastToEnd := func() bool { return ended.Add(1) == 2 }

	type result struct {
		n   int64
		err error
	}
	upDone := make(chan result, 1)
	go func() {
		n, err := copyHalf(server, client, pipes, &moved, up, lastToEnd)
		if err != nil {
			abort(client, server)
		}
		upDone <- result{n, err}
	}()
	downN, downErr := copyHalf(client, server, pipes, &moved, down, lastToEnd)
	if downErr != nil {
		abort(client, server)
	}
	u := <-upDone
	stopWatch()

	res := spliceResult{up: u.n, down: downN, end: endClosed}
	switch {
	case idled.Load():
		res.end = endIdle
	case u.err != nil || downErr != nil:
		res.end = endError
	}
	return res
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
