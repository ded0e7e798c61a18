package l7

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tidegate/tidegate/l7/accesslog"
	"github.com/tidegate/tidegate/l7/conninfo"
	"github.com/tidegate/tidegate/l7/route"
	"github.com/tidegate/tidegate/l7/upstream"
	"github.com/tidegate/tidegate/shared/config"
	"golang.org/x/net/http/httpguts"
)

// statusClientClosed is logged and counted, never sent, when the client
// goes away before its response is complete (the nginx convention).
const statusClientClosed = 499

// statusForError maps an error from forwarding r to the status the client
// gets. This is the one place where that mapping lives.
func statusForError(r *http.Request, err error) int {
	if r.Context().Err() != nil || errors.Is(err, context.Canceled) {
		return statusClientClosed
	}
	return upstreamErrorStatus(err)
}

// upstreamErrorStatus maps an error from forwarding to a backend, with the
// client still connected, to the status the client gets.
func upstreamErrorStatus(err error) int {
	// A request body cut off by http.MaxBytesReader (HTTP/2 body limits).
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return http.StatusRequestEntityTooLarge
	}
	if errors.Is(err, upstream.ErrInvalidTarget) {
		return http.StatusBadRequest
	}
	if errors.Is(err, upstream.ErrOverloaded) {
		return http.StatusServiceUnavailable
	}
	if errors.Is(err, upstream.ErrNoBackend) {
		return http.StatusBadGateway
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// requestState travels in the request context from the listener's handler
// to the upstream handler and back, for the access log and metrics.
type requestState struct {
	attempt  upstream.Attempt
	upstream string
	err      error
	id       string
	// st and settings are the state and listener settings loaded when the
	// request arrived; route is the matched route, nil until routing.
	st       *state
	settings *listenerSettings
	route    *route.Route
	// policy contains the access-log fields that policy middlewares fill in
	// through [LogFields].
	policy accesslog.PolicyFields
	// badInterim is the error of a 1xx response from the backend that
	// was not forwarded. The final response then gets 502 (see
	// [responseRecorder.WriteHeader]).
	badInterim error
}

type requestStateKey struct{}

func stateFrom(ctx context.Context) *requestState {
	rs, _ := ctx.Value(requestStateKey{}).(*requestState)
	return rs
}

// LogFields returns the policy fields of r's access-log line, for
// middlewares to fill in from their decision callbacks. It returns nil
// when r is not served by a [Server]. The fields belong to the request:
// write them only from goroutines that handle it.
func LogFields(r *http.Request) *accesslog.PolicyFields {
	if rs := stateFrom(r.Context()); rs != nil {
		return &rs.policy
	}
	return nil
}

// DetachContext returns a context for work that a request starts and that
// outlives it, such as a background cache refresh. The context keeps ctx's
// values but not its cancellation. It carries its own copy of the request
// state, so the work does not write to the upstream attempt, error or
// access-log fields of the request that started it. Call it on the
// goroutine that serves the request.
func DetachContext(ctx context.Context) context.Context {
	out := context.WithoutCancel(ctx)
	rs := stateFrom(ctx)
	if rs == nil {
		return out
	}
	detached := &requestState{
		upstream: rs.upstream,
		id:       rs.id,
		st:       rs.st,
		settings: rs.settings,
		route:    rs.route,
	}
	out = context.WithValue(out, requestStateKey{}, detached)
	return upstream.WithAttempt(out, &detached.attempt)
}

// ListenerConfig returns the configuration of the listener that received
// r, as it was when r arrived, or nil when r is not served by a [Server].
// The caller must not modify it.
func ListenerConfig(r *http.Request) *config.Listener {
	if rs := stateFrom(r.Context()); rs != nil {
		return &rs.settings.cfg
	}
	return nil
}

// ServeHTTP is the entry of every request on the listener: it assigns the
// request ID, runs the pre-routing wrappers around [listener.routeRequest],
// and logs and counts the result.
func (l *listener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	s := l.server
	st := s.state.Load()

	id := r.Header.Get("X-Request-Id")
	if !validRequestID(id) {
		id = s.requestIDs.next()
		r.Header.Set("X-Request-Id", id)
	}
	w.Header().Set("X-Request-Id", id)

	rs := &requestState{id: id, st: st, settings: l.settings.Load()}
	rec := &responseRecorder{ResponseWriter: w, server: s, id: id, rs: rs}
	body := &countingBody{ReadCloser: r.Body}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = body
	}
	ctx := context.WithValue(r.Context(), requestStateKey{}, rs)
	r = r.WithContext(upstream.WithAttempt(ctx, &rs.attempt))

	defer func() {
		p := recover()
		aborted := p != nil
		sum := requestSummary{
			proto:      r.Proto,
			method:     r.Method,
			host:       r.Host,
			path:       r.URL.Path,
			info:       conninfo.FromRequest(r),
			clientGone: r.Context().Err() != nil,
			status:     rec.status,
			bytesIn:    body.n.Load(),
			bytesOut:   rec.bytes,
		}
		l.finish(st, &sum, rs, start, aborted)
		if p != nil {
			panic(p)
		}
	}()
	l.entry.ServeHTTP(rec, r)
}

// routeRequest checks the Host against the TLS server name, routes, and
// runs the route's middlewares and upstream.
func (l *listener) routeRequest(w http.ResponseWriter, r *http.Request) {
	rs := stateFrom(r.Context())
	info := conninfo.FromRequest(r)
	if rs.settings.certs != nil && info != nil && rs.settings.certs.misdirected(info.SNI, route.NormalizeHost(r.Host)) {
		http.Error(w, "misdirected request: host is not served on this connection", http.StatusMisdirectedRequest)
		return
	}
	rt := rs.st.routes.Match(r)
	if rt == nil {
		http.Error(w, "no route matches this request", http.StatusNotFound)
		return
	}
	rs.route = rt
	rs.upstream = rt.Upstream
	rs.st.handlers[rt.Index].ServeHTTP(w, r)
}

// requestSummary is the part of a finished request that the access log and
// the metrics read, whichever path served it.
type requestSummary struct {
	proto, method, host, path string
	info                      *conninfo.Info
	// clientGone is set when the client left before the response was
	// complete.
	clientGone bool
	// status is the status sent, 0 when nothing was written.
	status            int
	bytesIn, bytesOut int64
}

func (l *listener) finish(st *state, sum *requestSummary, rs *requestState, start time.Time, aborted bool) {
	elapsed := time.Since(start)
	status := finalStatus(sum.clientGone, sum.status, rs.err, aborted)
	routeName := ""
	if rs.route != nil {
		routeName = rs.route.Name
	}

	m := l.server.metrics
	m.observeRequest(routeName, rs.upstream, sum.method, status, elapsed)
	if rs.attempt.Backend != "" {
		m.backends.observe(rs.upstream, rs.attempt.Backend, status, elapsed)
	}
	if rs.attempt.Retries > 0 {
		m.retries.WithLabelValues(rs.upstream).Add(float64(rs.attempt.Retries))
	}

	if st.accessLog == nil {
		return
	}
	e := &accesslog.Entry{
		Time:       start,
		Listener:   l.name,
		Proto:      sum.proto,
		Method:     sum.method,
		Host:       sum.host,
		Path:       sum.path,
		Status:     status,
		BytesIn:    sum.bytesIn,
		BytesOut:   sum.bytesOut,
		DurationMS: float64(elapsed.Microseconds()) / 1000,
		Route:      routeName,
		Upstream:   rs.upstream,
		Backend:    rs.attempt.Backend,
		Retries:    rs.attempt.Retries,
		RequestID:  rs.id,

		PolicyFields: rs.policy,
	}
	if info := sum.info; info != nil {
		e.ClientAddr = info.Client.Addr().String()
		e.ConnID = info.UniqueID
		e.TLSVersion = info.TLSVersion
		e.SNI = info.SNI
	}
	if rs.err != nil {
		e.Error = rs.err.Error()
	}
	if err := st.accessLog.Log(e); err != nil {
		m.accessLogErrors.Inc()
	}
}

// finalStatus returns the status to log and count: 499 when the client
// left before its response was complete, otherwise what was sent.
func finalStatus(clientGone bool, sent int, err error, aborted bool) int {
	switch {
	case err != nil && (clientGone || errors.Is(err, context.Canceled)):
		return statusClientClosed
	case aborted && clientGone:
		return statusClientClosed
	case sent == 0:
		// A handler that writes nothing sends 200.
		return http.StatusOK
	}
	return sent
}

// newUpstreamHandler returns the handler that forwards to pool.
func (s *Server) newUpstreamHandler(pool *upstream.Pool) http.Handler {
	return &httputil.ReverseProxy{
		Rewrite:        s.rewrite,
		Transport:      pool,
		ModifyResponse: modifyResponse,
		ErrorHandler:   s.handleProxyError,
		ErrorLog:       slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug),
		BufferPool:     bufferPool{},
	}
}

// errInvalidResponse reports a backend response that net/http's parser
// accepts but a proxy must not forward. The client gets 502.
var errInvalidResponse = errors.New("invalid response from backend")

func modifyResponse(resp *http.Response) error {
	if rs := stateFrom(resp.Request.Context()); rs != nil && rs.badInterim != nil {
		return rs.badInterim
	}
	// RFC 9110 section 15 makes a status outside 100..599 invalid, and a
	// client would treat it as a 5xx. The fast path rejects it too.
	if resp.StatusCode < 100 || resp.StatusCode > 599 {
		return fmt.Errorf("%w: status %d outside 100..599", errInvalidResponse, resp.StatusCode)
	}
	if err := fixFieldNames(resp.Header); err != nil {
		return err
	}
	if len(resp.TransferEncoding) > 0 && resp.Body != http.NoBody {
		// Trailer fields arrive when the body ends.
		resp.Body = &trailerFixer{ReadCloser: resp.Body, resp: resp}
	}
	// The listener already set the request ID on the response; a copy from
	// the backend would make a second value.
	resp.Header.Del("X-Request-Id")
	return nil
}

// fixFieldNames removes whitespace between a field name and its colon, as
// RFC 9112 section 5.1 requires of a proxy. net/http's parser keeps such a
// name with its spaces and does not frame the body by it, so a framing or
// hop-by-hop name fails here, as does one that is still not a token.
func fixFieldNames(h http.Header) error {
	for name, values := range h {
		if !strings.ContainsAny(name, " \t") {
			continue
		}
		trimmed := strings.TrimRight(name, " \t")
		if !httpguts.ValidHeaderFieldName(trimmed) {
			return fmt.Errorf("%w: field name %q", errInvalidResponse, name)
		}
		key := http.CanonicalHeaderKey(trimmed)
		switch key {
		case "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Proxy-Connection",
			"Upgrade", "Proxy-Authenticate", "Te", "Trailer":
			return fmt.Errorf("%w: field name %q", errInvalidResponse, name)
		}
		// NOTE: the header map has lost the order between these values
		// and those of a field spelled without the whitespace, so they
		// go last. RFC 9110 section 5.3 forbids a proxy to change that
		// order, and the fast path keeps it.
		delete(h, name)
		h[key] = append(h[key], values...)
	}
	return nil
}

// trailerFixer runs fixFieldNames on the trailer fields of resp when its
// body ends, before ReverseProxy copies them. A field that fails turns the
// end of the body into an error, which aborts the response, as the fast
// path does.
type trailerFixer struct {
	io.ReadCloser
	resp *http.Response
}

func (t *trailerFixer) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	if err == io.EOF {
		if ferr := fixFieldNames(t.resp.Trailer); ferr != nil {
			return n, fmt.Errorf("trailer: %w", ferr)
		}
	}
	return n, err
}

func (s *Server) handleProxyError(w http.ResponseWriter, r *http.Request, err error) {
	status := statusForError(r, err)
	if rs := stateFrom(r.Context()); rs != nil {
		rs.err = err
	}
	if status == statusClientClosed {
		return
	}
	if s.logger.Enabled(r.Context(), slog.LevelDebug) {
		s.logger.Debug("upstream request failed", "status", status, "err", err)
	}
	http.Error(w, http.StatusText(status), status)
}

// rewrite builds the forwarding headers of an outbound request. By the time
// it runs, ReverseProxy has removed hop-by-hop headers, every header named
// in Connection, and the inbound Forwarded and X-Forwarded-{For,Host,Proto}.
func (s *Server) rewrite(pr *httputil.ProxyRequest) {
	in, out := pr.In, pr.Out
	out.Header.Del("X-Real-Ip")
	out.Header.Del("X-Forwarded-Port")
	// Set it again in case the client named it in Connection, which made
	// ReverseProxy strip it.
	if rs := stateFrom(in.Context()); rs != nil {
		out.Header.Set("X-Request-Id", rs.id)
	}

	info := conninfo.FromRequest(in)
	if info == nil {
		return
	}
	var trusted bool
	if l := s.listenerByName(info.Listener); l != nil {
		trusted = containsAddr(l.settings.Load().trustedForwarders, info.Client.Addr())
	}
	client := info.Client.Addr()
	clientText := client.String()
	proto := "http"
	if info.TLS {
		proto = "https"
	}
	port := strconv.Itoa(int(info.Local.Port()))

	h := forwardingHeaders{
		xff:   clientText,
		real:  clientText,
		proto: proto,
		host:  in.Host,
		port:  port,
	}
	self := ForwardedElement{For: forwardedNode(client), Host: in.Host, Proto: proto}
	forwarded := []ForwardedElement{self}

	if !trusted {
		removeForwardedExtras(out.Header)
	}
	if trusted {
		hop := hopByHop(in.Header)
		keep := func(name string) (string, bool) {
			if hop[name] {
				return "", false
			}
			v := strings.Join(in.Header.Values(name), ", ")
			return v, v != ""
		}
		if v, ok := keep("X-Forwarded-For"); ok && validXFF(v) {
			h.xff = v + ", " + h.xff
		}
		if v, ok := keep("X-Real-Ip"); ok && validXFF(v) && !strings.Contains(v, ",") {
			h.real = strings.TrimSpace(v)
		}
		if v, ok := keep("X-Forwarded-Proto"); ok && (v == "http" || v == "https") {
			h.proto = v
		}
		if v, ok := keep("X-Forwarded-Host"); ok {
			h.host = v
		}
		if v, ok := keep("X-Forwarded-Port"); ok && validPort(v) {
			h.port = v
		}
		if v, ok := keep("Forwarded"); ok {
			if prior, err := ParseForwarded(v); err == nil {
				forwarded = append(prior, self)
			}
		}
	}
	// One backing array for the six values saves five allocations per
	// request over Header.Set. Each slice is capped at one element, so an
	// append by a later handler copies instead of overwriting a neighbour.
	// The keys are already in canonical form.
	vals := [...]string{h.xff, h.real, h.proto, h.host, h.port, FormatForwarded(forwarded)}
	backing := vals[:]
	out.Header["X-Forwarded-For"] = backing[0:1:1]
	out.Header["X-Real-Ip"] = backing[1:2:2]
	out.Header["X-Forwarded-Proto"] = backing[2:3:3]
	out.Header["X-Forwarded-Host"] = backing[3:4:4]
	out.Header["X-Forwarded-Port"] = backing[4:5:5]
	out.Header["Forwarded"] = backing[5:6:6]
}

// removeForwardedExtras deletes the X-Forwarded-* fields that rewrite does
// not build itself, such as X-Forwarded-Prefix and X-Forwarded-Server.
// Backends build links from them and the cache does not key on them, so
// from an untrusted client they would let one request poison a cached
// response for everyone.
func removeForwardedExtras(h http.Header) {
	for name := range h {
		if !strings.HasPrefix(name, "X-Forwarded-") {
			continue
		}
		switch name {
		case "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port":
			continue
		}
		delete(h, name)
	}
}

type forwardingHeaders struct {
	xff, real, proto, host, port string
}

// hopByHop returns the canonical names the Connection header of h lists.
func hopByHop(h http.Header) map[string]bool {
	var names map[string]bool
	for _, v := range h.Values("Connection") {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				if names == nil {
					names = map[string]bool{}
				}
				names[http.CanonicalHeaderKey(f)] = true
			}
		}
	}
	return names
}

// validRequestID accepts an inbound X-Request-Id of up to 128 visible ASCII
// characters; anything else is replaced so logs stay parseable.
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// requestIDs generates request IDs: a random 64-bit prefix per process and a
// counter, so IDs are unique without a random read per request.
type requestIDs struct {
	prefix [8]byte
	n      atomic.Uint64
}

func newRequestIDs() *requestIDs {
	g := &requestIDs{}
	_, _ = rand.Read(g.prefix[:])
	return g
}

func (g *requestIDs) next() string {
	var b [16]byte
	copy(b[:8], g.prefix[:])
	binary.BigEndian.PutUint64(b[8:], g.n.Add(1))
	// Encoding into a stack array leaves the string conversion as the only
	// allocation.
	var text [32]byte
	hex.Encode(text[:], b[:])
	return string(text[:])
}

// responseRecorder remembers the status and counts body bytes. It exposes
// the wrapped writer through Unwrap so http.ResponseController reaches
// Flush and friends, and it tracks hijacked connections for drain.
type responseRecorder struct {
	http.ResponseWriter
	server *Server
	status int
	bytes  int64
	// id is the request ID, set on the final response again when a 1xx
	// response cleared the header map (ReverseProxy does after each).
	id string
	rs *requestState
}

func (rr *responseRecorder) WriteHeader(code int) {
	if rr.status == 0 || rr.status < 200 {
		rr.status = code
	}
	if code >= 200 && rr.id != "" {
		if h := rr.Header(); len(h["X-Request-Id"]) == 0 {
			h["X-Request-Id"] = []string{rr.id}
		}
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// ReverseProxy relays a backend's 1xx fields as they came,
		// without modifyResponse, so their names are fixed here. A 1xx
		// that fails is not forwarded, and neither is any after it: the
		// final response gets 502, as on the fast path.
		if rr.rs != nil && rr.rs.badInterim == nil {
			rr.rs.badInterim = fixFieldNames(rr.Header())
		}
		if rr.rs != nil && rr.rs.badInterim != nil {
			return
		}
		// A proxy must not forward hop-by-hop fields (RFC 9110 section
		// 7.6.1).
		removeHopByHop(rr.Header())
	}
	rr.ResponseWriter.WriteHeader(code)
}

// removeHopByHop deletes from h the fields named in its Connection field
// and the fields that ReverseProxy removes from responses as hop-by-hop.
func removeHopByHop(h http.Header) {
	for name := range hopByHop(h) {
		delete(h, name)
	}
	for _, name := range []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"} {
		delete(h, name)
	}
}

func (rr *responseRecorder) Write(p []byte) (int, error) {
	if rr.status == 0 {
		rr.status = http.StatusOK
	}
	n, err := rr.ResponseWriter.Write(p)
	rr.bytes += int64(n)
	return n, err
}

func (rr *responseRecorder) Unwrap() http.ResponseWriter { return rr.ResponseWriter }

// Hijack takes over the connection for an upgraded protocol and registers
// it so that Drain can wait for it: http.Server.Shutdown does not track
// hijacked connections.
func (rr *responseRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(rr.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	rr.status = http.StatusSwitchingProtocols
	return rr.server.upgraded.add(c), brw, nil
}

// countingBody counts request body bytes read.
type countingBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// bufferPool reuses 32 KiB copy buffers across responses.
type bufferPool struct{}

var copyBuffers = newSyncPool(32 << 10)

func (bufferPool) Get() []byte  { return *copyBuffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }
