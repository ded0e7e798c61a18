package l7

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tidegate/tidegate/l7/conninfo"
	"github.com/tidegate/tidegate/l7/passthrough"
	"github.com/tidegate/tidegate/l7/route"
	"github.com/tidegate/tidegate/l7/upstream"
)

// The HTTP/1.1 fast path forwards plain requests without net/http: GET and
// HEAD requests without a body, upgrade or expectation, on routes whose
// middlewares leave such requests alone, to pools of cleartext HTTP/1.1
// backends. It reads the request head into a per-connection buffer, writes
// the outbound head in one write on a pooled backend connection, and relays
// the response on the client connection's own goroutine. net/http, by
// contrast, runs a background read on the client connection and two
// goroutines per backend connection, and parses every head into maps.
//
// The first request on a connection that the fast path does not take goes
// to net/http with the bytes already read, and net/http serves the rest of
// that connection. Both paths set the same forwarding headers, request ID,
// metrics and access-log fields.

// fastReadBuffer is the client read buffer. A request head that does not
// fit goes to net/http.
const fastReadBuffer = 4 << 10

var (
	fastReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, fastReadBuffer) }}
	fastWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
	fastStates  = sync.Pool{New: func() any {
		x := new(fastExchange)
		x.values = x.req.values
		return x
	}}
)

// errHandOff reports a request the fast path leaves to net/http.
var errHandOff = errors.New("request needs the full HTTP server")

// fastConns tracks the connections the fast path serves on one listener, so
// that a drain can close the idle ones and wait for the rest.
type fastConns struct {
	mu       sync.Mutex
	conns    map[*fastConn]struct{}
	empty    chan struct{} // closed when conns empties during a drain
	draining atomic.Bool
}

func (f *fastConns) add(c *fastConn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.draining.Load() {
		return false
	}
	if f.conns == nil {
		f.conns = map[*fastConn]struct{}{}
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *fastConns) remove(c *fastConn) {
	f.mu.Lock()
	delete(f.conns, c)
	if len(f.conns) == 0 && f.empty != nil {
		close(f.empty)
		f.empty = nil
	}
	f.mu.Unlock()
}

// drain stops the fast path from taking new connections, wakes the idle
// ones so they close, and waits until every connection has finished its
// request in flight and closed, or ctx ends.
func (f *fastConns) drain(ctx context.Context) error {
	f.mu.Lock()
	f.draining.Store(true)
	if len(f.conns) == 0 {
		f.mu.Unlock()
		return nil
	}
	if f.empty == nil {
		f.empty = make(chan struct{})
	}
	empty := f.empty
	for c := range f.conns {
		c.wakeIfIdle()
	}
	f.mu.Unlock()
	select {
	case <-empty:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// closeAll closes every connection, for the end of a drain that ran out of
// time.
func (f *fastConns) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.conns {
		_ = c.conn.Close()
	}
}

// fastConn is one client connection on the fast path.
type fastConn struct {
	l    *listener
	conn net.Conn
	info *conninfo.Info
	br   *bufio.Reader
	// idle is set while the connection waits for a request.
	idle      atomic.Bool
	fastCount prometheus.Counter
	// remote is the client address as text, made on first use.
	remote string
	// ctx carries info for the requests a responder serves, made on
	// first use.
	ctx context.Context
	// idleBy is the read deadline readHead last set for an idle wait,
	// zero once another read deadline replaced it.
	idleBy time.Time
}

// idleSlack is how much earlier than its idle timeout a connection may be
// closed. readHead keeps an idle deadline set less than this long ago,
// which saves a timer update through the connection wrappers on most
// keep-alive requests.
func idleSlack(idle time.Duration) time.Duration { return min(idle/64, time.Second) }

// baseContext returns the connection's base context for responders.
func (c *fastConn) baseContext() context.Context {
	if c.ctx == nil {
		c.ctx = conninfo.NewContext(context.Background(), c.info)
	}
	return c.ctx
}

// remoteAddr returns the client address in the form of
// [http.Request.RemoteAddr].
func (c *fastConn) remoteAddr() string {
	if c.remote == "" {
		c.remote = c.info.Client.String()
	}
	return c.remote
}

func (c *fastConn) wakeIfIdle() {
	if c.idle.Load() {
		// A deadline in the past makes the blocked read return.
		_ = c.conn.SetReadDeadline(time.Unix(1, 0))
	}
}

// fastEnabled reports whether the fast path may serve conn.
func (l *listener) fastEnabled(ls *listenerSettings, info *conninfo.Info) bool {
	o := &l.server.opts
	if len(o.preRouting) > 0 && o.fastPathCheck == nil {
		return false
	}
	if !ls.cfg.FastPathEnabled() || info.ALPN == "h2" {
		return false
	}
	// Headers from a trusted forwarder are merged, which net/http does.
	return !containsAddr(ls.trustedForwarders, info.Client.Addr())
}

// serveFast serves requests on conn until one needs net/http, and then
// returns the connection for net/http to serve, with the bytes already read
// put back. It returns nil when it has closed the connection.
//
// NOTE: the handoff is one way. After one POST, cache miss or upgrade, the
// rest of the connection pays net/http's cost even for plain GETs.
func (l *listener) serveFast(conn net.Conn, info *conninfo.Info) net.Conn {
	c := &fastConn{l: l, conn: conn, info: info, fastCount: l.server.metrics.fastRequests.WithLabelValues(l.name)}
	if !l.fast.add(c) {
		return conn
	}
	active := l.server.metrics.activeConns.WithLabelValues(l.name)
	active.Inc()
	c.br = fastReaders.Get().(*bufio.Reader)
	c.br.Reset(conn)

	handOff := c.serve()

	l.fast.remove(c)
	active.Dec()
	var rest []byte
	if handOff && c.br.Buffered() > 0 {
		rest, _ = c.br.Peek(c.br.Buffered())
		rest = append([]byte(nil), rest...)
	}
	c.br.Reset(nil)
	fastReaders.Put(c.br)
	if !handOff {
		_ = conn.Close()
		return nil
	}
	// net/http sets its own deadlines from here on.
	if err := conn.SetDeadline(time.Time{}); err != nil {
		_ = conn.Close()
		return nil
	}
	if len(rest) == 0 {
		return conn
	}
	return &replayConn{Conn: conn, pending: rest}
}

// serve runs the request loop. It returns true to hand the connection to
// net/http and false to close it.
func (c *fastConn) serve() bool {
	for {
		ls := c.l.settings.Load()
		head, err := c.readHead(ls)
		if err != nil {
			if errors.Is(err, errHandOff) {
				c.l.server.metrics.fastHandOffs.WithLabelValues(c.l.name, "head_size").Inc()
				return true
			}
			return false
		}
		keep, reason := c.serveRequest(ls, head)
		if reason != "" {
			c.l.server.metrics.fastHandOffs.WithLabelValues(c.l.name, reason).Inc()
			return true
		}
		if !keep || c.l.fast.draining.Load() {
			return false
		}
	}
}

// readHead waits for the next request head and returns it, still in the
// read buffer. It returns errHandOff for a head that does not fit.
func (c *fastConn) readHead(ls *listenerSettings) ([]byte, error) {
	cfg := &ls.cfg
	if c.br.Buffered() == 0 {
		c.idle.Store(true)
		idle := cfg.IdleTimeout.D()
		if idle == 0 {
			idle = cfg.ReadTimeout.D()
		}
		// A shorter idle timeout from a reload moves the deadline
		// earlier, which is never skipped.
		by := deadline(idle)
		if by.IsZero() || c.idleBy.IsZero() || by.Before(c.idleBy) || by.Sub(c.idleBy) >= idleSlack(idle) {
			if err := c.conn.SetReadDeadline(by); err != nil {
				c.idle.Store(false)
				return nil, err
			}
			c.idleBy = by
		}
		// The drain check comes after the deadline is set. A drain
		// that starts before the check finds idle set and moves the
		// deadline to the past after this line. A drain that starts
		// later is caught here. With the check first, a drain starting
		// between the check and the deadline would have its wake-up
		// overwritten, and the connection would hold the drain for its
		// idle timeout.
		if c.l.fast.draining.Load() {
			c.idle.Store(false)
			return nil, net.ErrClosed
		}
		_, err := c.br.Peek(1)
		c.idle.Store(false)
		if err != nil {
			return nil, err
		}
	}
	// A head that arrived whole needs no header deadline, which saves a
	// timer update on most requests.
	buf, _ := c.br.Peek(c.br.Buffered())
	if n := upstream.HeadEnd(buf); n >= 0 {
		return buf[:n], nil
	}
	timeout := cfg.ReadHeaderTimeout.D()
	if timeout == 0 {
		timeout = cfg.ReadTimeout.D()
	}
	c.idleBy = time.Time{}
	if err := c.conn.SetReadDeadline(deadline(timeout)); err != nil {
		return nil, err
	}
	for {
		buf, _ := c.br.Peek(c.br.Buffered())
		if n := upstream.HeadEnd(buf); n >= 0 {
			return buf[:n], nil
		}
		if len(buf) >= c.br.Size() || len(buf) >= int(cfg.MaxHeaderBytes) && cfg.MaxHeaderBytes > 0 {
			return nil, errHandOff
		}
		if _, err := c.br.Peek(len(buf) + 1); err != nil {
			return nil, err
		}
	}
}

func deadline(d time.Duration) time.Time {
	if d <= 0 {
		return time.Time{}
	}
	return time.Now().Add(d)
}

// fastExchange is the per-request state of the fast path, pooled.
type fastExchange struct {
	// values is req.values, bound once per exchange value so that
	// routing and passThrough do not allocate.
	values func(string) []string
	ptReq  passthrough.Request
	edits  []func(int, passthrough.Head)
	req    h1Request
	resp   h1Response
	out    []byte
	// w collects the response of a passthrough.Responder, and head is
	// the passthrough.Head of a stored response while it is written.
	w    fastWriter
	head storedHead
	rs   requestState
	sum  requestSummary
}

// release returns x to its pool, without the buffers that a large
// response head or a large cached body grew, so the pool does not keep
// them.
func (x *fastExchange) release() {
	if cap(x.out) > 64<<10 {
		x.out = nil
	}
	if cap(x.resp.fields) > 4*maxFastFields {
		x.resp.fields = nil
	}
	if cap(x.w.body) > 64<<10 {
		x.w.body = nil
	}
	// A responder's header map may share values with a cache entry, which
	// the pool must not keep alive after the entry is replaced or purged.
	if len(x.w.header) > 0 {
		clear(x.w.header)
	}
	fastStates.Put(x)
}

// Reasons for handing a connection to net/http, for the handoff metric.
const (
	handOffRequest     = "request"     // not a plain GET or HEAD
	handOffSettings    = "settings"    // fast_path off, or a trusted forwarder
	handOffMisdirected = "misdirected" // net/http responds with 421
	handOffRoute       = "route"       // no route, or its middlewares or pool need net/http
)

// serveRequest forwards the request whose head is head. keep reports
// whether the connection may serve another request. A non-empty handOff
// is the reason the request was left unread for net/http.
func (c *fastConn) serveRequest(ls *listenerSettings, head []byte) (keep bool, handOff string) {
	start := time.Now()
	s := c.l.server
	x := fastStates.Get().(*fastExchange)
	defer x.release()
	req := &x.req
	if !ls.cfg.FastPathEnabled() || containsAddr(ls.trustedForwarders, c.info.Client.Addr()) {
		return false, handOffSettings
	}
	if !parseFastRequest(head, req) {
		return false, handOffRequest
	}
	if check := s.opts.fastPathCheck; check != nil && !check(string(req.path)) {
		return false, handOffRequest
	}
	host := string(req.host)
	if ls.certs != nil && ls.certs.misdirected(c.info.SNI, route.NormalizeHost(host)) {
		return false, handOffMisdirected
	}
	st := s.state.Load()
	path := string(req.path)
	rt := st.routes.MatchParts(host, path, req.method, x.values)
	if rt == nil {
		return false, handOffRoute
	}
	pool, responder := x.passThrough(st, st.handlers[rt.Index], c.l.name)
	if pool == nil && responder == nil {
		return false, handOffRoute
	}

	id := ""
	if validRequestID(string(req.requestID)) {
		id = string(req.requestID)
	} else {
		id = s.requestIDs.next()
	}
	x.rs = requestState{id: id, st: st, settings: ls, route: rt, upstream: rt.Upstream}
	x.sum = requestSummary{proto: "HTTP/1.1", method: req.method, host: host, path: path, info: c.info}
	if responder != nil && !x.respond(c, responder, host, path) {
		x.rs = requestState{}
		return false, handOffRoute
	}
	if responder == nil {
		x.out = c.appendOutboundHead(x.out[:0], req, host, id)
	}
	// The head stays readable in the buffer until the next read, and
	// nothing reads the client connection before the response is done.
	_, _ = c.br.Discard(len(head))

	if wt := ls.cfg.WriteTimeout.D(); wt > 0 {
		_ = c.conn.SetWriteDeadline(time.Now().Add(wt))
	}
	bw := fastWriters.Get().(*bufio.Writer)
	bw.Reset(c.conn)
	if responder != nil {
		keep = x.writeResponded(bw, c.l.fast.draining.Load()) && !req.close
	} else {
		keep = c.forward(x, pool, bw) && !req.close
	}
	// As on the net/http path, the request is logged and counted before
	// the last buffered bytes go out, so a client that has its response
	// also finds it in the metrics.
	c.l.finish(st, &x.sum, &x.rs, start, false)
	c.fastCount.Inc()
	if bw.Buffered() > 0 {
		if err := bw.Flush(); err != nil {
			keep = false
		}
	}
	bw.Reset(nil)
	fastWriters.Put(bw)
	x.rs = requestState{}
	x.sum = requestSummary{}
	return keep, ""
}

// appendFields writes the fields not marked drop as "name: value" lines.
func appendFields(b []byte, fields []h1Field) []byte {
	for _, f := range fields {
		if f.drop {
			continue
		}
		b = append(b, f.name...)
		b = append(b, ": "...)
		b = append(b, f.value...)
		b = append(b, "\r\n"...)
	}
	return b
}

// passThrough walks the route's handler chain h down to its upstream
// handler and returns that upstream's pool, collecting the response-head
// edits of the middlewares on the way in x.edits. When it meets a
// middleware that may serve the request itself, such as the cache, it
// returns that instead. It returns neither when a middleware needs the
// request or the pool needs its transport.
func (x *fastExchange) passThrough(st *state, h http.Handler, listener string) (*upstream.Pool, passthrough.Responder) {
	x.edits = x.edits[:0]
	x.ptReq = passthrough.Request{Listener: listener, Method: x.req.method, Values: x.values}
	for range maxChain {
		if rp, ok := h.(*httputil.ReverseProxy); ok {
			return st.direct[rp], nil
		}
		if r, ok := h.(passthrough.Responder); ok {
			return nil, r
		}
		pt, ok := h.(passthrough.Handler)
		if !ok {
			return nil, nil
		}
		next, edit, ok := pt.PassThrough(&x.ptReq)
		if !ok {
			return nil, nil
		}
		if edit != nil {
			x.edits = append(x.edits, edit)
		}
		h = next
	}
	return nil, nil
}

// maxChain bounds the walk of a handler chain.
const maxChain = 32

// values returns the values of the request fields named name (canonical),
// for routes that match on headers.
func (r *h1Request) values(name string) []string {
	var out []string
	for _, f := range r.fields {
		if len(f.name) == len(name) && http.CanonicalHeaderKey(string(f.name)) == name {
			out = append(out, string(f.value))
		}
	}
	return out
}

// appendOutboundHead writes the request head for the backend: the client's
// fields without hop-by-hop and forwarding ones, then the forwarding
// headers that [Server.rewrite] sets on the net/http path.
func (c *fastConn) appendOutboundHead(b []byte, req *h1Request, host, id string) []byte {
	b = append(b, req.method...)
	b = append(b, ' ')
	b = append(b, req.target...)
	b = append(b, " HTTP/1.1\r\n"...)
	b = appendFields(b, req.fields)

	client := c.info.Client.Addr()
	proto := "http"
	if c.info.TLS {
		proto = "https"
	}

	b = append(b, "X-Forwarded-For: "...)
	b = client.AppendTo(b)
	b = append(b, "\r\nX-Real-Ip: "...)
	b = client.AppendTo(b)
	b = append(b, "\r\nX-Forwarded-Proto: "...)
	b = append(b, proto...)
	b = append(b, "\r\nX-Forwarded-Host: "...)
	b = append(b, host...)
	b = append(b, "\r\nX-Forwarded-Port: "...)
	b = strconv.AppendUint(b, uint64(c.info.Local.Port()), 10)
	b = append(b, "\r\nForwarded: "...)
	b = ForwardedElement{For: forwardedNode(client), Host: host, Proto: proto}.appendTo(b)
	b = append(b, "\r\nX-Request-Id: "...)
	b = append(b, id...)
	b = append(b, "\r\n\r\n"...)
	return b
}

// forward sends the request to a backend of pool, retrying on connection
// errors as [upstream.Pool.RoundTrip] does, and relays the response or an
// error response. It reports whether the client connection is still
// usable.
func (c *fastConn) forward(x *fastExchange, pool *upstream.Pool, bw *bufio.Writer) bool {
	if err := pool.Admit(); err != nil {
		return c.writeError(x, bw, err)
	}
	defer pool.Done()

	var triedBuf [4]*upstream.Backend
	tried := triedBuf[:0]
	var lastErr error
	heldRetry := false
	defer func() {
		if heldRetry {
			pool.ReturnRetry()
		}
	}()
	for try := 0; ; try++ {
		b := pool.Pick(tried)
		if b == nil {
			if lastErr == nil {
				lastErr = upstream.ErrNoBackend
			}
			return c.writeError(x, bw, lastErr)
		}
		tried = append(tried, b)
		x.rs.attempt.Backend = b.Addr
		b.StartRequest()
		bc, err := c.exchange(x, pool, b)
		if heldRetry {
			pool.ReturnRetry()
			heldRetry = false
		}
		if err == nil {
			pool.Observe(b, x.resp.status >= 500)
			keep := c.relay(x, pool, bc, bw)
			b.EndRequest()
			return keep
		}
		b.EndRequest()
		if errors.Is(err, errClientGone) {
			x.rs.err = err
			x.sum.clientGone = true
			return false
		}
		if upstream.IsConnectError(err) {
			pool.Observe(b, true)
		}
		lastErr = err
		if try >= pool.Retries() || isTimeout(err) || !pool.TakeRetry() {
			return c.writeError(x, bw, err)
		}
		heldRetry = true
		x.rs.attempt.Retries++
		if c.l.server.logger.Enabled(context.Background(), slog.LevelDebug) {
			c.l.server.logger.Debug("retrying on another backend", "backend", b.Addr, "err", err)
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// exchange writes the outbound head to a connection to b and parses the
// first response head into x.resp, leaving it in the connection's buffer
// for relay. A reused connection that fails before any response byte is
// replaced by a new one, since the backend may have closed it while it was
// idle.
func (c *fastConn) exchange(x *fastExchange, pool *upstream.Pool, b *upstream.Backend) (*upstream.DirectConn, error) {
	ctx := context.Background()
	bc, err := pool.DirectConn(ctx, b)
	if err != nil {
		return nil, err
	}
	for {
		err = c.sendHead(x, pool, bc)
		if err == nil {
			return bc, nil
		}
		stale := bc.Reused && bc.R.Buffered() == 0 && !isTimeout(err) && !errors.Is(err, errBadResponse) && !errors.Is(err, errClientGone)
		_ = bc.Close()
		if !stale {
			return nil, err
		}
		if bc, err = pool.DialDirect(ctx, b); err != nil {
			return nil, err
		}
	}
}

// watchDelay is how long the fast path waits for a backend's response head
// before it watches the client connection for a close. Most responses
// arrive sooner, so most requests make no extra read.
const watchDelay = 500 * time.Millisecond

// errClientGone ends a request whose client closed its connection before
// the backend's response head arrived.
var errClientGone = errors.New("client closed the connection before the response")

// sendHead writes the request and reads the response head that follows.
// When the backend is slow to respond, it watches the client connection
// meanwhile, as net/http does for every request, and gives up on the
// backend when the client goes away.
func (c *fastConn) sendHead(x *fastExchange, pool *upstream.Pool, bc *upstream.DirectConn) error {
	rht := pool.ResponseHeaderTimeout()
	headBy := deadline(rht)
	first := time.Now().Add(watchDelay)
	if !headBy.IsZero() && headBy.Before(first) {
		first = headBy
	}
	_ = bc.SetDeadline(first)
	if _, err := bc.Write(x.out); err != nil {
		return err
	}
	head, err := bc.PeekHead()
	if err != nil && isTimeout(err) && (headBy.IsZero() || time.Now().Before(headBy)) {
		_ = bc.SetDeadline(headBy)
		head, err = c.readHeadWatching(bc)
	}
	if err != nil {
		return err
	}
	return parseResponse(head, &x.resp)
}

// readHeadWatching reads the response head while a second goroutine waits
// for the client connection to become readable. A client that closes its
// connection ends the wait with errClientGone. Bytes it sends (a pipelined
// request) stay in the read buffer for later.
//
// NOTE: such bytes also end the watch, so a pipelining client that then
// closes is not noticed until the backend responds or times out.
func (c *fastConn) readHeadWatching(bc *upstream.DirectConn) ([]byte, error) {
	c.idleBy = time.Time{}
	_ = c.conn.SetReadDeadline(time.Time{})
	var gone atomic.Bool
	done := make(chan error, 1)
	go func() {
		_, err := c.br.Peek(1)
		if err != nil && !isTimeout(err) {
			gone.Store(true)
			_ = bc.SetReadDeadline(time.Unix(1, 0))
		}
		done <- err
	}()
	head, err := bc.PeekHead()
	// Stop the watch, and wait for it so the read buffer has one user.
	_ = c.conn.SetReadDeadline(time.Unix(1, 0))
	<-done
	if gone.Load() {
		return nil, errClientGone
	}
	return head, err
}

// bodyWatch watches the client connection while a response body is
// relayed, once the body has taken watchDelay, as readHeadWatching does
// for the head. A client that closes its connection cuts the backend read
// short, so the backend request ends instead of waiting on a stalled
// backend.
type bodyWatch struct {
	c     *fastConn
	bc    *upstream.DirectConn
	timer *time.Timer
	gone  atomic.Bool

	mu      sync.Mutex
	started bool
	stopped bool
	done    chan struct{}
}

func (c *fastConn) watchBody(bc *upstream.DirectConn) *bodyWatch {
	w := &bodyWatch{c: c, bc: bc}
	w.timer = time.AfterFunc(watchDelay, w.start)
	return w
}

func (w *bodyWatch) start() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	w.started = true
	w.done = make(chan struct{})
	_ = w.c.conn.SetReadDeadline(time.Time{})
	go func() {
		defer close(w.done)
		// Bytes the client sends (a pipelined request) stay in the
		// read buffer and end the watch.
		_, err := w.c.br.Peek(1)
		if err != nil && !isTimeout(err) {
			w.gone.Store(true)
			_ = w.bc.SetReadDeadline(time.Unix(1, 0))
		}
	}()
}

// stop ends the watch, waiting for its goroutine so that the client read
// buffer has one user again, and reports whether the client went away.
func (w *bodyWatch) stop() bool {
	w.timer.Stop()
	w.mu.Lock()
	w.stopped = true
	started := w.started
	w.mu.Unlock()
	if started {
		_ = w.c.conn.SetReadDeadline(time.Unix(1, 0))
		<-w.done
		w.c.idleBy = time.Time{}
	}
	return w.gone.Load()
}

// relay writes the response whose head is in x.resp, and any 1xx
// responses before it, to the client, and returns bc to the pool or closes
// it. It reports whether the client connection is still usable.
func (c *fastConn) relay(x *fastExchange, pool *upstream.Pool, bc *upstream.DirectConn, bw *bufio.Writer) bool {
	resp := &x.resp
	// As on the general path, 1xx responses are bounded by the size of
	// all the heads read, not by their number.
	informational := 0
	for resp.status < 200 {
		head, _ := bc.R.Peek(bc.R.Buffered())
		size := upstream.HeadEnd(head)
		informational += size
		if resp.status == http.StatusSwitchingProtocols || informational > upstream.MaxResponseHead {
			_ = bc.Close()
			return c.writeError(x, bw, errBadResponse)
		}
		// RFC 9110 section 15.2: a proxy forwards 1xx responses it did
		// not ask for.
		x.out = appendResponseHead(x.out[:0], resp, x.rs.id, false, false)
		_, _ = bc.R.Discard(size)
		if _, err := bw.Write(x.out); err != nil {
			return c.clientFailed(x, bc, err)
		}
		if err := bw.Flush(); err != nil {
			return c.clientFailed(x, bc, err)
		}
		h, err := bc.PeekHead()
		if err == nil {
			err = parseResponse(h, resp)
		}
		if err != nil {
			// Interim responses leave the final status open, so the
			// client still gets a 502.
			_ = bc.Close()
			return c.writeError(x, bw, err)
		}
	}
	head, _ := bc.R.Peek(bc.R.Buffered())
	_, _ = bc.R.Discard(upstream.HeadEnd(head))
	noBody := x.req.method == "HEAD" || resp.status == http.StatusNoContent || resp.status == http.StatusNotModified
	bodyPending := !noBody && (resp.contentLength < 0 || int64(bc.R.Buffered()) < resp.contentLength)
	if bodyPending {
		// The body has no deadline, as with net/http's transport. A body
		// that is all in the buffer needs no read, so its timer stays.
		_ = bc.SetReadDeadline(time.Time{})
	}

	for _, edit := range x.edits {
		edit(resp.status, resp)
	}
	closeClient := x.req.close || c.l.fast.draining.Load()
	x.out = appendResponseHead(x.out[:0], resp, x.rs.id, !noBody, closeClient)
	x.sum.status = resp.status
	if _, err := bw.Write(x.out); err != nil {
		return c.clientFailed(x, bc, err)
	}

	// A body that is not all here yet may take long, and a client that
	// leaves meanwhile must end the backend request.
	var watch *bodyWatch
	if bodyPending {
		watch = c.watchBody(bc)
	}
	var err error
	var clientErr bool
	switch {
	case noBody:
	case resp.contentLength >= 0:
		err, clientErr = c.copyFixed(x, bc.R, bw, resp.contentLength)
	case resp.chunked:
		err, clientErr = c.copyChunked(x, bc.R, bw)
	default:
		err, clientErr = c.copyUntilClose(x, bc.R, bw)
	}
	if watch != nil && watch.stop() && err != nil {
		err, clientErr = errClientGone, true
	}
	if err != nil {
		_ = bc.Close()
		x.rs.err = err
		x.sum.clientGone = clientErr
		if s := c.l.server; s.logger.Enabled(context.Background(), slog.LevelDebug) {
			s.logger.Debug("response body relay failed", "request_id", x.rs.id, "backend", x.rs.attempt.Backend, "client_gone", clientErr, "err", err)
		}
		return false
	}
	reusable := !resp.close && (resp.contentLength >= 0 || resp.chunked || noBody)
	pool.ReleaseDirect(bc, reusable)
	return !closeClient
}

func (c *fastConn) clientFailed(x *fastExchange, bc *upstream.DirectConn, err error) bool {
	_ = bc.Close()
	x.rs.err = err
	x.sum.clientGone = true
	return false
}

// appendResponseHead writes the client's response head. withBody selects
// the framing of a response that has a body. The 1xx, 204 and 304 heads
// and responses to HEAD keep the framing fields the backend declared.
func appendResponseHead(b []byte, resp *h1Response, id string, withBody, closeConn bool) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(resp.status), 10)
	b = append(b, ' ')
	if len(resp.reason) > 0 {
		b = append(b, resp.reason...)
	} else {
		b = append(b, http.StatusText(resp.status)...)
	}
	b = append(b, "\r\n"...)
	b = appendFields(b, resp.fields)
	if resp.status < 200 {
		return append(b, "\r\n"...)
	}

	b = append(b, "X-Request-Id: "...)
	b = append(b, id...)
	b = append(b, "\r\n"...)
	if !resp.hasDate {
		b = append(b, "Date: "...)
		b = appendDate(b)
		b = append(b, "\r\n"...)
	}

	switch {
	case resp.status == http.StatusNoContent:
	case resp.contentLength >= 0:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, resp.contentLength, 10)
		b = append(b, "\r\n"...)
	case withBody || resp.chunked && resp.status != http.StatusNotModified:
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	if closeConn {
		b = append(b, "Connection: close\r\n"...)
	}
	return append(b, "\r\n"...)
}

// copyFixed relays n body bytes. clientErr is true when the client write
// failed and false when the backend read did.
func (c *fastConn) copyFixed(x *fastExchange, r *bufio.Reader, w *bufio.Writer, n int64) (err error, clientErr bool) {
	for n > 0 {
		if r.Buffered() == 0 {
			// Send what is ready before waiting for the backend.
			if w.Buffered() > 0 {
				if err := w.Flush(); err != nil {
					return err, true
				}
			}
			if n >= int64(r.Size()) {
				return c.copyLarge(x, r, w, n)
			}
			if _, err := r.Peek(1); err != nil {
				return unexpectedEOF(err), false
			}
		}
		k := min(int64(r.Buffered()), n)
		p, _ := r.Peek(int(k))
		if _, err := w.Write(p); err != nil {
			return err, true
		}
		_, _ = r.Discard(int(k))
		x.sum.bytesOut += k
		n -= k
	}
	return nil, false
}

// copyLarge relays n bytes through a 32 KiB buffer that bypasses both
// bufio buffers, which are empty when it is called.
func (c *fastConn) copyLarge(x *fastExchange, r *bufio.Reader, w *bufio.Writer, n int64) (error, bool) {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	for n > 0 {
		k, err := r.Read(buf[:min(int64(len(buf)), n)])
		if k > 0 {
			if _, werr := w.Write(buf[:k]); werr != nil {
				return werr, true
			}
			if werr := w.Flush(); werr != nil {
				return werr, true
			}
			x.sum.bytesOut += int64(k)
			n -= int64(k)
		}
		if err != nil && n > 0 {
			return unexpectedEOF(err), false
		}
	}
	return nil, false
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// copyChunked relays a chunked body chunk by chunk, with its trailer
// section. Chunk extensions are dropped.
func (c *fastConn) copyChunked(x *fastExchange, r *bufio.Reader, w *bufio.Writer) (error, bool) {
	var hex [20]byte
	for {
		line, err := c.readLine(r, w)
		if err != nil {
			return err, errors.Is(err, errClientWrite)
		}
		size, err := parseChunkSize(line)
		if err != nil {
			return err, false
		}
		if size == 0 {
			break
		}
		if _, err := w.Write(append(strconv.AppendInt(hex[:0], size, 16), '\r', '\n')); err != nil {
			return err, true
		}
		if err, clientErr := c.copyFixed(x, r, w, size); err != nil {
			return err, clientErr
		}
		crlf, err := c.readLine(r, w)
		if err != nil {
			return err, errors.Is(err, errClientWrite)
		}
		if len(crlf) != 0 {
			return errBadChunk, false
		}
		if _, err := w.WriteString("\r\n"); err != nil {
			return err, true
		}
	}
	if _, err := w.WriteString("0\r\n"); err != nil {
		return err, true
	}
	for n := 0; ; n++ {
		line, err := c.readLine(r, w)
		if err != nil {
			return err, errors.Is(err, errClientWrite)
		}
		if len(line) == 0 {
			break
		}
		f, trimmed, ok := splitResponseField(line)
		if !ok || n == maxFastFields || trimmed && !trimmableField(f.name) {
			return errBadChunk, false
		}
		if trimmed {
			// As in the head, whitespace before the colon is removed
			// (RFC 9112 section 5.1).
			line = append(append(append(x.out[:0], f.name...), ": "...), f.value...)
			x.out = line
		}
		if _, err := w.Write(line); err != nil {
			return err, true
		}
		if _, err := w.WriteString("\r\n"); err != nil {
			return err, true
		}
	}
	_, err := w.WriteString("\r\n")
	return err, err != nil
}

var errClientWrite = errors.New("write to client failed")

// readLine reads one line of chunked framing without its line end,
// flushing w before it waits for the backend.
func (c *fastConn) readLine(r *bufio.Reader, w *bufio.Writer) ([]byte, error) {
	if r.Buffered() == 0 && w.Buffered() > 0 {
		if err := w.Flush(); err != nil {
			return nil, errors.Join(errClientWrite, err)
		}
	}
	line, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, errBadChunk
		}
		return nil, unexpectedEOF(err)
	}
	line = line[:len(line)-1]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, nil
}

// copyUntilClose relays a body that ends when the backend closes the
// connection, as chunks, so the client connection stays open.
func (c *fastConn) copyUntilClose(x *fastExchange, r *bufio.Reader, w *bufio.Writer) (error, bool) {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	var hex [20]byte
	for {
		if r.Buffered() == 0 && w.Buffered() > 0 {
			if err := w.Flush(); err != nil {
				return err, true
			}
		}
		k, err := r.Read(buf)
		if k > 0 {
			if _, werr := w.Write(append(strconv.AppendInt(hex[:0], int64(k), 16), '\r', '\n')); werr != nil {
				return werr, true
			}
			if _, werr := w.Write(buf[:k]); werr != nil {
				return werr, true
			}
			if _, werr := w.WriteString("\r\n"); werr != nil {
				return werr, true
			}
			x.sum.bytesOut += int64(k)
		}
		if errors.Is(err, io.EOF) {
			_, werr := w.WriteString("0\r\n\r\n")
			return werr, werr != nil
		}
		if err != nil {
			return err, false
		}
	}
}

// writeError responds with the status that err maps to, as
// [Server.handleProxyError] does on the net/http path.
func (c *fastConn) writeError(x *fastExchange, bw *bufio.Writer, err error) bool {
	x.rs.err = err
	status := upstreamErrorStatus(err)
	s := c.l.server
	if s.logger.Enabled(context.Background(), slog.LevelDebug) {
		s.logger.Debug("upstream request failed", "status", status, "request_id", x.rs.id, "backend", x.rs.attempt.Backend, "err", err)
	}

	text := http.StatusText(status)
	b := x.out[:0]
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, text...)
	b = append(b, "\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nX-Request-Id: "...)
	b = append(b, x.rs.id...)
	b = append(b, "\r\nDate: "...)
	b = appendDate(b)
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(text)+1), 10)
	b = append(b, "\r\n\r\n"...)
	if x.req.method != "HEAD" {
		b = append(b, text...)
		b = append(b, '\n')
		x.sum.bytesOut = int64(len(text) + 1)
	}

	x.out = b
	x.sum.status = status
	if _, werr := bw.Write(b); werr != nil {
		x.sum.clientGone = true
		return false
	}
	return true
}

// dateCache holds the Date field value of the current second.
var dateCache atomic.Pointer[cachedDate]

type cachedDate struct {
	unix int64
	text []byte
}

func appendDate(b []byte) []byte {
	now := time.Now()
	d := dateCache.Load()
	if d == nil || d.unix != now.Unix() {
		d = &cachedDate{unix: now.Unix(), text: now.UTC().AppendFormat(nil, http.TimeFormat)}
		dateCache.Store(d)
	}
	return append(b, d.text...)
}

// replayConn returns bytes the fast path read before the connection's own,
// for net/http.
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}
