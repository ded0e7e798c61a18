package inspect

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// ErrRejected is returned by [Conn.Read] after the connection was rejected.
var ErrRejected = errors.New("inspect: request rejected")

const (
	rejectDeadline = time.Second            // bound for writing a rejection
	lingerTimeout  = 500 * time.Millisecond // drain after a rejection
	lingerBytes    = 256 << 10
)

// Conn validates the HTTP/1.x requests read through it. See [WrapConn].
type Conn struct {
	net.Conn
	framer   *framer
	onReject func(Rejection)
	outPos   int // bytes of framer.out already returned

	// headStart is when the current request head began, zero between
	// requests. delivered mirrors framer.delivered to notice a new head.
	headStart time.Time
	delivered int

	pending       *Rejection
	pendingInBody bool
	readErr       error

	mu sync.Mutex // guards the fields below, shared with Write and deadline calls
	// httpDeadline is the read deadline the HTTP server asked for and
	// ownDeadline the one the limits impose; the earlier one is applied.
	httpDeadline time.Time
	ownDeadline  time.Time
	// applied is the read deadline last set on the wrapped connection,
	// when hasApplied.
	applied    time.Time
	hasApplied bool
	// writes counts Write calls since the newest request head was released.
	writes int
	// awaitUpgrade is set from the release of an upgrade request's head
	// until its response status line, collected in statusLine, is known.
	awaitUpgrade    bool
	statusLine      []byte
	upgradeDecided  bool
	upgradeAccepted bool
	rejected        bool
}

// WrapConn returns c wrapped so that every HTTP/1.x request read through it
// is checked against strict framing rules and lim before the caller (an
// [http.Server]) reads any of its bytes. On a violation the wrapper writes a
// response with the matching status and "Connection: close", calls onReject
// (which may be nil) and closes c. The server then gets a read error and
// never a request.
//
// Requests are checked across keep-alive and pipelining. After an accepted
// upgrade (a 101 response) or an HTTP/2 connection preface the bytes pass
// unchecked. Wrap plaintext connections, or TLS connections after the
// handshake when ALPN did not pick h2.
//
// NOTE: a violation found in a pipelined request while the handler of an
// earlier one still runs is sent after that handler writes its response.
// If the handler reads its body and only then writes, the rejection can cut
// that response short. Pipelining clients are rare and the connection is
// hostile by then.
func WrapConn(c net.Conn, lim Limits, onReject func(Rejection)) *Conn {
	w := &Conn{
		Conn:     c,
		framer:   newFramer(lim),
		onReject: onReject,
	}
	w.headStart = time.Now()
	return w
}

// NetConn returns the wrapped connection.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// Read implements net.Conn.
func (c *Conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		if c.outPos < len(c.framer.out) {
			n := copy(b, c.framer.out[c.outPos:])
			c.outPos += n
			if c.outPos == len(c.framer.out) {
				c.framer.out = c.framer.out[:0]
				c.outPos = 0
			}
			return n, nil
		}
		// A pending rejection goes first: a client that half-closed after
		// a bad request still reads the response.
		if c.pending != nil {
			return c.handlePending(b)
		}
		if c.readErr != nil {
			return 0, c.readErr
		}
		if c.checkUpgrade() {
			continue
		}
		if c.framer.state == statePassthrough {
			return c.Conn.Read(b)
		}

		c.applyDeadline()
		// Read into the caller's buffer: the framer copies what it keeps,
		// so an idle connection holds no read buffer of its own. The loop
		// then hands the validated bytes back through b.
		n, err := c.Conn.Read(b)
		if n > 0 {
			c.feed(b[:n])
		}
		if err == nil {
			continue
		}
		if !isTimeout(err) {
			c.readErr = err
			continue
		}
		if c.ownDeadlinePassed() && c.pending == nil {
			reason := ReasonHeaderTimeout
			if c.framer.inBody() {
				reason = ReasonBodyTimeout
			}
			c.setPending(reject(reason))
			continue
		}
		// The server's own deadline passed. It is not sticky: the server
		// may set a new deadline and read again.
		if c.outPos < len(c.framer.out) || c.pending != nil {
			continue
		}
		return 0, err
	}
}

func (c *Conn) feed(data []byte) {
	wasInBody := c.framer.inBody()
	rej := c.framer.feed(data)
	if c.framer.delivered != c.delivered {
		c.delivered = c.framer.delivered
		c.headStart = time.Time{}
		// Watch the response from the moment the head is released: the
		// handler may respond before the body is read.
		c.mu.Lock()
		c.writes = 0
		c.awaitUpgrade = c.framer.lastUpgrade
		c.upgradeDecided, c.statusLine = false, nil
		c.mu.Unlock()
	}
	switch {
	case !c.framer.inHead():
		c.headStart = time.Time{}
	case c.framer.headBytes > 0 && c.headStart.IsZero():
		c.headStart = time.Now()
	}
	if rej != nil {
		c.setPending(rej)
		c.pendingInBody = wasInBody || c.framer.inBody()
	}
}

func (c *Conn) setPending(rej *Rejection) {
	c.pending = rej
	c.pendingInBody = c.framer.inBody()
}

// checkUpgrade applies the outcome of a pending upgrade and reports whether
// it changed anything.
func (c *Conn) checkUpgrade() bool {
	if c.framer.state != stateAwaitUpgrade {
		return false
	}
	c.mu.Lock()
	decided, accepted := c.upgradeDecided, c.upgradeAccepted
	if decided {
		c.awaitUpgrade, c.upgradeDecided, c.statusLine = false, false, nil
	}
	c.mu.Unlock()
	if !decided {
		return false
	}
	if rej := c.framer.resumeAfterUpgrade(accepted); rej != nil {
		c.setPending(rej)
	}
	if c.framer.inHead() && c.framer.headBytes > 0 {
		c.headStart = time.Now()
	}
	return true
}

// handlePending sends the pending rejection, or first waits while the
// handler of an earlier request may still be running.
func (c *Conn) handlePending(b []byte) (int, error) {
	c.mu.Lock()
	writes := c.writes
	c.mu.Unlock()
	if !c.pendingInBody && c.framer.delivered > 0 && writes == 0 {
		// This read comes from the server's background read during the
		// earlier request. Block like a read would, but keep nothing: the
		// server ends the wait with a past deadline once the handler is done.
		c.mu.Lock()
		c.ownDeadline = time.Time{}
		_ = c.applyLocked(c.httpDeadline)
		c.mu.Unlock()
		for {
			// b is scratch space here, because this read returns no bytes.
			if _, err := c.Conn.Read(b); err != nil {
				if !isTimeout(err) {
					c.readErr = err
				}
				return 0, err
			}
		}
	}
	rej := *c.pending
	c.pending = nil
	c.readErr = ErrRejected
	sendStatus := !(c.pendingInBody && writes > 0)
	c.rejectConn(rej, sendStatus)
	return 0, ErrRejected
}

// rejectConn writes the rejection response when sendStatus is set, reports
// the rejection and closes the connection after draining what the client
// still sends, so the client reads the response rather than a reset.
func (c *Conn) rejectConn(rej Rejection, sendStatus bool) {
	rej.Client = c.Conn.RemoteAddr()
	c.mu.Lock()
	c.rejected = true
	if sendStatus {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(rejectDeadline))
		_, _ = c.Conn.Write(rejectionResponse(rej))
	}
	c.mu.Unlock()
	if c.onReject != nil {
		c.onReject(rej)
	}
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		c.mu.Lock()
		c.hasApplied = false
		c.mu.Unlock()
		_ = c.Conn.SetReadDeadline(time.Now().Add(lingerTimeout))
		_, _ = io.CopyN(io.Discard, c.Conn, lingerBytes)
	}
	_ = c.Conn.Close()
}

func rejectionResponse(rej Rejection) []byte {
	body := fmt.Sprintf("%d %s: %s\n", rej.Status, http.StatusText(rej.Status), rej.Reason)
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		rej.Status, http.StatusText(rej.Status), len(body), body)
}

// applyDeadline sets the earlier of the server's and the limits' deadlines
// on the wrapped connection.
func (c *Conn) applyDeadline() {
	var own time.Time
	lim := c.framer.lim
	switch {
	case c.framer.inHead() && lim.HeaderTimeout > 0 && !c.headStart.IsZero():
		own = c.headStart.Add(lim.HeaderTimeout)
	case c.framer.inBody() && lim.BodyTimeout > 0:
		own = time.Now().Add(lim.BodyTimeout)
	}
	c.mu.Lock()
	c.ownDeadline = own
	_ = c.applyLocked(earlier(c.httpDeadline, own))
	c.mu.Unlock()
}

// applyLocked sets the read deadline t on the wrapped connection unless it
// is the one set last, since every Read applies a deadline and most are
// unchanged. c.mu must be held.
func (c *Conn) applyLocked(t time.Time) error {
	if c.hasApplied && t.Equal(c.applied) {
		return nil
	}
	if err := c.Conn.SetReadDeadline(t); err != nil {
		c.hasApplied = false
		return err
	}
	c.applied, c.hasApplied = t, true
	return nil
}

// ownDeadlinePassed reports whether the limits' deadline, not the server's,
// ended the last read.
func (c *Conn) ownDeadlinePassed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ownDeadline.IsZero() || time.Now().Before(c.ownDeadline) {
		return false
	}
	return c.httpDeadline.IsZero() || c.ownDeadline.Before(c.httpDeadline)
}

func earlier(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}

// SetReadDeadline implements net.Conn. It takes effect at once, also on a
// blocked Read, which is how the HTTP server ends its background read.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.httpDeadline = t
	return c.applyLocked(earlier(t, c.ownDeadline))
}

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

// Write implements net.Conn. While an upgrade request waits for its response
// it watches the status line for 101.
func (c *Conn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rejected {
		return 0, ErrRejected
	}
	c.writes++
	if c.awaitUpgrade && !c.upgradeDecided {
		c.watchStatusLine(b)
	}
	return c.Conn.Write(b)
}

// watchStatusLine records whether the response to an upgrade request
// switches protocols. Interim responses other than 101 are not expected
// here and count as a refusal.
func (c *Conn) watchStatusLine(b []byte) {
	need := len("HTTP/1.1 101")
	if missing := need - len(c.statusLine); missing > 0 {
		c.statusLine = append(c.statusLine, b[:min(missing, len(b))]...)
	}
	if len(c.statusLine) < need {
		return
	}
	c.upgradeDecided = true
	c.upgradeAccepted = bytes.HasPrefix(c.statusLine, []byte("HTTP/1.")) && bytes.HasSuffix(c.statusLine, []byte(" 101"))
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
