package userspace

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
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
		// Build fails only on a version or address bug, never on client input.
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
	res := splice(client, server, v.IdleTimeout, up, down)

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
// answers. It returns nil when every attempt failed.
func (e *Engine) connectReal(l *listener, v *VIP, reals []string, hdr []byte, id proxyheader.ID) (*net.TCPConn, string) {
	d := net.Dialer{Timeout: v.ConnectTimeout}
	for _, addr := range reals {
		t0 := time.Now()
		c, err := d.Dial("tcp", addr)
		e.m.dialSeconds.WithLabelValues(v.Name, addr).Observe(time.Since(t0).Seconds())
		if err == nil {
			server := c.(*net.TCPConn)
			if err = writeHeader(server, hdr, v.ConnectTimeout); err == nil {
				if e.track(server) {
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

// writeHeader writes the PROXY header before any client byte. The socket
// buffer of a fresh connection always has room for it, so the deadline only
// guards against a peer that is already gone.
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

// chunkSize is how much one spliced io.Copy call moves before the loop
// records activity and pushes the idle deadline forward.
const chunkSize = 1 << 20

// splice copies client to server and server to client until both sides have
// sent FIN, passing each FIN on with CloseWrite. An error on either side, or
// no byte in either direction for idle, closes both.
func splice(client, server *net.TCPConn, idle time.Duration, up, down prometheus.Counter) spliceResult {
	var lastActive atomic.Int64
	lastActive.Store(time.Now().UnixNano())

	type result struct {
		n   int64
		err error
	}
	upDone := make(chan result, 1)
	go func() {
		n, err := copyHalf(server, client, idle, &lastActive, up)
		upDone <- result{n, err}
		if err != nil {
			abort(client, server)
		}
	}()
	downN, downErr := copyHalf(client, server, idle, &lastActive, down)
	if downErr != nil {
		abort(client, server)
	}
	u := <-upDone

	res := spliceResult{up: u.n, down: downN, end: endClosed}
	for _, err := range []error{u.err, downErr} {
		switch {
		case err == nil:
		case errors.Is(err, errIdle):
			res.end = endIdle
		case res.end == endClosed:
			res.end = endError
		}
	}
	return res
}

var errIdle = errors.New("idle timeout")

// copyHalf copies src to dst until src sends FIN, then half-closes dst.
// Only read deadlines are used: a write deadline that fires in the middle
// of a splice would drop the bytes already taken from src.
func copyHalf(dst, src *net.TCPConn, idle time.Duration, lastActive *atomic.Int64, count prometheus.Counter) (int64, error) {
	var total int64
	for {
		if idle > 0 {
			_ = src.SetReadDeadline(time.Now().Add(idle))
		}
		// io.Copy into a *net.TCPConn from an io.LimitedReader around one is
		// spliced by the kernel on Linux.
		n, err := io.Copy(dst, &io.LimitedReader{R: src, N: chunkSize})
		if n > 0 {
			total += n
			count.Add(float64(n))
			lastActive.Store(time.Now().UnixNano())
		}
		switch {
		case err == nil && n == chunkSize:
			continue
		case err == nil:
			// EOF from src: pass the FIN on and let the other direction run.
			if cerr := dst.CloseWrite(); cerr != nil {
				return total, cerr
			}
			return total, nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			if time.Since(time.Unix(0, lastActive.Load())) < idle {
				continue
			}
			return total, errIdle
		default:
			return total, err
		}
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
