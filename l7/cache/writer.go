package cache

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// upstreamWriter is the ResponseWriter the next handler writes the upstream
// response into. It holds the header fields back until the status is known,
// then lets decide choose where the body goes: to the client, into a copy
// for storing, or both. A response larger than the copy limit stops being
// copied, and keeps streaming to the client, as soon as it passes the limit.
type upstreamWriter struct {
	client http.ResponseWriter
	header http.Header
	now    func() time.Time

	// decide runs once when the final status is written. It sets the fields
	// below and writes the client's header when toClient is set.
	decide func(status int)

	wroteHeader  bool
	status       int
	responseTime time.Time

	toClient bool // forward the body to client
	copyBody bool // keep a copy of the body in buf
	limit    int64
	buf      bytes.Buffer
	overflow bool // the body passed limit, so buf was dropped
}

func (u *upstreamWriter) Header() http.Header { return u.header }

func (u *upstreamWriter) WriteHeader(code int) {
	if u.wroteHeader {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// Informational responses (103 Early Hints) go straight through;
		// the next handler clears the header map after each one.
		if u.client != nil {
			h := u.client.Header()
			for k, vs := range u.header {
				h[k] = vs
			}
			u.client.WriteHeader(code)
			for k := range u.header {
				h.Del(k)
			}
		}
		return
	}
	u.wroteHeader = true
	u.status = code
	u.responseTime = u.now()
	u.decide(code)
}

func (u *upstreamWriter) Write(p []byte) (int, error) {
	if !u.wroteHeader {
		u.WriteHeader(http.StatusOK)
	}
	if u.copyBody && !u.overflow {
		if int64(u.buf.Len()+len(p)) > u.limit {
			u.overflow = true
			u.buf = bytes.Buffer{}
		} else {
			u.buf.Write(p)
		}
	}
	if u.toClient {
		return u.client.Write(p)
	}
	return len(p), nil
}

// Flush sends buffered data to the client, so streamed responses such as
// event streams are not held back by the cache.
func (u *upstreamWriter) Flush() {
	if u.toClient {
		_ = http.NewResponseController(u.client).Flush()
	}
}

// Unwrap exposes the client's writer to http.ResponseController.
func (u *upstreamWriter) Unwrap() http.ResponseWriter { return u.client }

// finish completes a response the next handler left without a status, the
// way net/http would send it.
func (u *upstreamWriter) finish() {
	if !u.wroteHeader {
		u.WriteHeader(http.StatusOK)
	}
}

// body returns a copy of the stored body, or nil when none was kept.
func (u *upstreamWriter) body() ([]byte, bool) {
	if !u.copyBody || u.overflow {
		return nil, false
	}
	return bytes.Clone(u.buf.Bytes()), true
}

// copyTrailers moves trailer values that the next handler set after the
// body into the client's header, where net/http sends them as trailers:
// fields announced in Trailer and fields named with http.TrailerPrefix.
func copyTrailers(client, upstream http.Header) {
	for _, name := range canonicalFields(upstream.Values("Trailer")) {
		if values, ok := upstream[name]; ok {
			client[name] = values
		}
	}
	for name, values := range upstream {
		if strings.HasPrefix(name, http.TrailerPrefix) {
			client[name] = values
		}
	}
}

// hookWriter calls onHeader once just before the final status goes to the
// client, so a caller can add fields and learn the status.
type hookWriter struct {
	http.ResponseWriter
	onHeader    func(status int, h http.Header)
	wroteHeader bool
}

func (w *hookWriter) WriteHeader(code int) {
	if !w.wroteHeader && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.wroteHeader = true
		w.onHeader(code, w.ResponseWriter.Header())
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *hookWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

func (w *hookWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

// Unwrap exposes the client's writer to http.ResponseController.
func (w *hookWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// discardWriter absorbs the response of a background refresh.
type discardWriter struct{ header http.Header }

func (d *discardWriter) Header() http.Header {
	if d.header == nil {
		d.header = http.Header{}
	}
	return d.header
}
func (d *discardWriter) WriteHeader(int)             {}
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }

// headerSize approximates the bytes h takes when stored.
func headerSize(h http.Header) int64 {
	var n int64
	for k, vs := range h {
		for _, v := range vs {
			n += int64(len(k) + len(v) + 4)
		}
	}
	return n
}

// contentLength returns the Content-Length of h, or -1 when it is missing
// or invalid.
func contentLength(h http.Header) int64 {
	v := h.Get("Content-Length")
	if v == "" {
		return -1
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}
