package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Requests without a body go to cleartext HTTP/1.1 backends on direct
// connections: the request is written and the response head read on the
// goroutine that called [Pool.RoundTrip]. net/http's transport would hand
// both to the two goroutines it runs per connection, with a channel
// exchange each way, which is most of its cost for small requests. Requests
// with a body, upgrades and requests to TLS or h2c pools go through the
// transport.

// MaxResponseHead is the largest response head read from a backend, the
// default limit of net/http's transport.
const MaxResponseHead = 10 << 20

// ErrInvalidTarget marks a request whose target cannot be written in an
// HTTP/1.1 request line. An HTTP/2 client can send one in :path.
var ErrInvalidTarget = errors.New("upstream: invalid request target")

// errNothingWritten marks a request that failed before its first byte was
// written, so the backend cannot have seen it.
var errNothingWritten = errors.New("upstream: request not written")

// errBadResponse marks a response a backend should not have sent.
var errBadResponse = errors.New("upstream: malformed response from backend")

// HeadEnd returns the length of the message head at the start of b,
// through the empty line that ends it, or -1 when b holds no complete
// head. Lines may end in CRLF or, as RFC 9112 section 2.2 allows a
// recipient to accept, a bare LF.
func HeadEnd(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		switch {
		case i < len(b) && b[i] == '\n':
			return i + 1
		case i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n':
			return i + 2
		}
	}
}

// PeekHead returns the next response head in c's read buffer, reading
// until it is complete and growing the buffer, up to [MaxResponseHead],
// for a head that does not fit. The head stays in the buffer.
func (c *DirectConn) PeekHead() ([]byte, error) {
	// scanned is where the search for the end of the head resumes. A
	// line end in the last two bytes searched may start the blank line.
	scanned := 0
	for {
		r := c.R
		buf, _ := r.Peek(r.Buffered())
		if n := HeadEnd(buf[scanned:]); n >= 0 {
			return buf[:scanned+n], nil
		}
		scanned = max(0, len(buf)-2)
		if len(buf) == r.Size() {
			if !c.GrowReader(MaxResponseHead) {
				return nil, fmt.Errorf("%w: head larger than %d bytes", errBadResponse, MaxResponseHead)
			}
			r = c.R
		}
		if _, err := r.Peek(len(buf) + 1); err != nil {
			if len(buf) > 0 && errors.Is(err, io.EOF) {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// exchangeable reports whether req can go on a direct connection: it has
// no body, requests no upgrade and needs nothing that only the transport
// does.
func (p *Pool) exchangeable(req *http.Request) bool {
	if !p.directOK {
		return false
	}
	if req.Body != nil && req.Body != http.NoBody || req.ContentLength != 0 {
		return false
	}
	if req.Close || req.Method == http.MethodConnect || len(req.Trailer) > 0 || len(req.TransferEncoding) > 0 {
		return false
	}
	// ReverseProxy sets Connection only on upgrade requests.
	_, conn := req.Header["Connection"]
	return !conn
}

var headBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// appendRequestHead appends req's request line and header fields as
// net/http's transport writes them.
func appendRequestHead(b []byte, req *http.Request) ([]byte, error) {
	// An HTTP/2 client can send spaces and separators in :method, and a
	// space would end the method early in the request line.
	if !httpguts.ValidHeaderFieldName(req.Method) {
		return b, fmt.Errorf("net/http: invalid method %q", req.Method)
	}

	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	// As the transport does, write an international name in Punycode
	// and drop the zone of an IPv6 address (RFC 6874 section 4).
	host, err := httpguts.PunycodeHostPort(host)
	if err != nil {
		return b, fmt.Errorf("http: invalid Host header: %w", err)
	}
	if !httpguts.ValidHostHeader(host) {
		return b, errors.New("http: invalid Host header")
	}
	host = withoutZone(host)

	// The transport rejects control bytes in the target. A space would
	// also end it early, and the query of a parsed URL can contain one.
	target := req.URL.RequestURI()
	for i := 0; i < len(target); i++ {
		if target[i] <= ' ' || target[i] == 0x7f {
			return b, fmt.Errorf("%w: byte %#x in request target %q", ErrInvalidTarget, target[i], target)
		}
	}

	b = append(b, req.Method...)
	b = append(b, ' ')
	b = append(b, target...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\n"...)

	// The transport names Go in User-Agent unless the request has the
	// field; ReverseProxy gives it an empty value to prevent that.
	if ua, ok := req.Header["User-Agent"]; !ok {
		b = append(b, "User-Agent: Go-http-client/1.1\r\n"...)
	} else if len(ua) > 0 && ua[0] != "" {
		b = append(b, "User-Agent: "...)
		b = append(b, textproto.TrimString(ua[0])...)
		b = append(b, "\r\n"...)
	}

	for name, values := range req.Header {
		// Every field is checked, the ones written above or left out
		// below too, as the transport does.
		if !httpguts.ValidHeaderFieldName(name) {
			return b, fmt.Errorf("net/http: invalid header field name %q", name)
		}
		for _, v := range values {
			if !httpguts.ValidHeaderFieldValue(v) {
				return b, fmt.Errorf("net/http: invalid header field value for %q", name)
			}
		}
		switch name {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		for _, v := range values {
			b = append(b, name...)
			b = append(b, ": "...)
			b = append(b, textproto.TrimString(v)...)
			b = append(b, "\r\n"...)
		}
	}

	// Many servers expect a length on requests of methods that usually
	// carry a body, so the transport sends one, as does this.
	switch req.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		b = append(b, "Content-Length: 0\r\n"...)
	}
	return append(b, "\r\n"...), nil
}

// withoutZone removes the zone from a bracketed IPv6 address in host, as
// in "[fe80::1%25eth0]:80".
func withoutZone(host string) string {
	if !strings.HasPrefix(host, "[") {
		return host
	}
	end := strings.LastIndexByte(host, ']')
	if end < 0 {
		return host
	}
	zone := strings.LastIndexByte(host[:end], '%')
	if zone < 0 {
		return host
	}
	return host[:zone] + host[end:]
}

// exchange sends req, which [Pool.exchangeable] accepted, to b on a
// direct connection and returns the response once its head has arrived.
// Its body reads from the connection, which goes back to the pool when the
// body has been read to the end.
func (p *Pool) exchange(req *http.Request, b *Backend) (*http.Response, error) {
	bp := headBuffers.Get().(*[]byte)
	head, err := appendRequestHead((*bp)[:0], req)
	defer func() {
		// A buffer grown for a rare large head is left to the collector.
		if cap(head) <= 64<<10 {
			*bp = head[:0]
			headBuffers.Put(bp)
		}
	}()
	if err != nil {
		return nil, err
	}
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := p.DirectConn(ctx, b)
	if err != nil {
		return nil, err
	}
	for {
		resp, err := p.sendHead(req, c, head)
		if err == nil {
			return resp, nil
		}
		// A reused connection that fails before any response byte may
		// have been closed by the backend while it was idle. The backend
		// may also have read the request and acted on it, so only a
		// request that net/http's transport would replay, or one of which
		// no byte was written, goes again on a new connection.
		stale := c.Reused && c.R.Buffered() == 0 && (replayable(req) || errors.Is(err, errNothingWritten)) &&
			!isTimeout(err) && !errors.Is(err, errBadResponse) && ctx.Err() == nil
		_ = c.Close()
		if !stale {
			return nil, err
		}
		if c, err = p.DialDirect(ctx, b); err != nil {
			return nil, err
		}
	}
}

// replayable reports whether req may be sent again after its connection
// failed, by the rule of net/http's transport: the method is GET, HEAD,
// OPTIONS or TRACE, or the request carries an Idempotency-Key or
// X-Idempotency-Key field. The transport also resends any request when
// writing it failed before the first byte, and so does [Pool.exchange].
func replayable(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, key := req.Header["Idempotency-Key"]
	_, xkey := req.Header["X-Idempotency-Key"]
	return key || xkey
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// errHeadTimeout is the error for a response head that did not arrive
// within the response header timeout, worded as the transport's.
var errHeadTimeout = timeoutError{"net/http: timeout awaiting response headers"}

type timeoutError struct{ msg string }

func (e timeoutError) Error() string   { return e.msg }
func (e timeoutError) Timeout() bool   { return true }
func (e timeoutError) Temporary() bool { return true }

// sendHead writes head on c and reads the response head, relaying 1xx
// responses to the request's client trace as the transport does.
func (p *Pool) sendHead(req *http.Request, c *DirectConn, head []byte) (*http.Response, error) {
	ctx := req.Context()
	// The deadline is set before the cancel function is registered, so
	// that it cannot overwrite the deadline of a cancel that came first.
	var headBy time.Time
	if rht := p.cfg.ResponseHeaderTimeout.D(); rht > 0 {
		headBy = time.Now().Add(rht)
	}
	if err := c.SetDeadline(headBy); err != nil {
		return nil, err
	}
	// A client that goes away ends the wait for the backend: the
	// deadline in the past fails the read.
	var clientLeft atomic.Bool
	stop := context.AfterFunc(ctx, func() {
		clientLeft.Store(true)
		_ = c.SetDeadline(time.Unix(1, 0))
	})
	fail := func(err error) (*http.Response, error) {
		stop()
		if clientLeft.Load() {
			return nil, ctx.Err()
		}
		if isTimeout(err) && !errors.Is(err, context.DeadlineExceeded) {
			return nil, errHeadTimeout
		}
		return nil, err
	}

	if n, err := c.Write(head); err != nil {
		if n == 0 {
			err = fmt.Errorf("%w: %w", errNothingWritten, err)
		}
		return fail(err)
	}
	trace := httptrace.ContextClientTrace(ctx)
	// As with the transport, 1xx responses are bounded by the size of all
	// the heads read, not by their number.
	read := 0
	for {
		h, err := c.PeekHead()
		if err != nil {
			if read > 0 {
				// The backend has begun to respond and the client has
				// seen 1xx responses, so the request must not go again
				// as if the connection had been stale.
				err = fmt.Errorf("%w: after a 1xx response: %w", errBadResponse, err)
			}
			return fail(err)
		}
		if read += len(h); read > MaxResponseHead {
			return fail(fmt.Errorf("%w: 1xx responses larger than %d bytes", errBadResponse, MaxResponseHead))
		}
		sentCacheControl := hasField(h, "Cache-Control")
		resp, err := http.ReadResponse(c.R, req)
		if err != nil {
			return fail(fmt.Errorf("%w: %v", errBadResponse, err))
		}
		undoPragmaCacheControl(resp.Header, sentCacheControl)
		switch {
		case resp.StatusCode < 100 || resp.StatusCode > 599:
			// RFC 9110 section 15 defines 100..599 only. A status below
			// 100 would otherwise be taken for a 1xx and reach
			// WriteHeader, which panics.
			return fail(fmt.Errorf("%w: status %d outside 100..599", errBadResponse, resp.StatusCode))
		case resp.StatusCode == http.StatusSwitchingProtocols:
			return fail(fmt.Errorf("%w: 101 Switching Protocols to a request without Upgrade", errBadResponse))
		case resp.StatusCode < 200:
			if trace != nil && trace.Got1xxResponse != nil {
				if err := trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
					return fail(err)
				}
			}
			continue
		}
		// The body has no deadline, as with the transport; the client
		// going away still ends it.
		if err := c.SetDeadline(time.Time{}); err != nil {
			return fail(err)
		}
		// A client that left since the head was read from the buffer
		// had its deadline cleared above. The cancel function stores
		// clientLeft before it sets the deadline, so if it is not set
		// yet, the deadline comes after and stays.
		if clientLeft.Load() {
			return fail(ctx.Err())
		}
		body := &exchangeBody{p: p, c: c, ctx: ctx, body: resp.Body, stop: stop, reusable: !resp.Close}
		if resp.Body == http.NoBody {
			body.finish(true)
			resp.Body = http.NoBody
			return resp, nil
		}
		resp.Body = body
		return resp, nil
	}
}

// exchangeBody is the body of a response read on a direct connection. The
// connection goes back to the pool when the body ends, and is closed when
// the body is closed before its end.
type exchangeBody struct {
	p        *Pool
	c        *DirectConn
	ctx      context.Context
	body     io.ReadCloser
	stop     func() bool
	reusable bool
}

func (e *exchangeBody) Read(b []byte) (int, error) {
	if e.c == nil {
		return 0, io.EOF
	}
	n, err := e.body.Read(b)
	switch {
	case err == io.EOF:
		e.finish(true)
	case err != nil && e.ctx.Err() != nil:
		// The deadline set when the client went away failed the read.
		err = e.ctx.Err()
	}
	return n, err
}

func (e *exchangeBody) Close() error {
	if e.c != nil {
		e.finish(false)
	}
	return nil
}

// finish returns the connection to the pool when the body was read to its
// end and nothing set a deadline on it, and closes it otherwise.
func (e *exchangeBody) finish(eof bool) {
	// stop reports false once the cancel function has started, which
	// may still set a deadline on the connection.
	reuse := e.stop() && eof && e.reusable
	e.p.ReleaseDirect(e.c, reuse)
	e.c = nil
}

// hasField reports whether the response head has a field named name, in
// any case.
func hasField(head []byte, name string) bool {
	// The status line comes first, so every field name follows a LF.
	for {
		i := bytes.IndexByte(head, '\n')
		if i < 0 {
			return false
		}
		head = head[i+1:]
		line := head
		if j := bytes.IndexByte(line, '\n'); j >= 0 {
			line = line[:j]
		}
		colon := bytes.IndexByte(line, ':')
		if colon > 0 && strings.EqualFold(string(bytes.TrimRight(line[:colon], " \t")), name) {
			return true
		}
	}
}

// undoPragmaCacheControl removes the "Cache-Control: no-cache" that
// http.ReadResponse adds to a response with "Pragma: no-cache" and no
// Cache-Control: net/http applies the request rule of RFC 7234 section
// 5.4 to responses too. Pragma has no defined meaning in a response (RFC
// 9111 section 5.4), and a proxy must not make the response stricter for
// the caches after it.
func undoPragmaCacheControl(h http.Header, sent bool) {
	if sent {
		return
	}
	if cc := h["Cache-Control"]; len(cc) == 1 && cc[0] == "no-cache" {
		delete(h, "Cache-Control")
	}
}
