package l7

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"

	"github.com/tidegate/tidegate/l7/passthrough"
)

// This file lets a middleware that implements [passthrough.Responder],
// such as the cache on a fresh hit, serve a fast-path request. The
// middleware gets an *http.Request built from the parsed head and a
// ResponseWriter that collects the response, which the fast path then
// writes as net/http would.

// fastWriter collects a response from a [passthrough.Responder].
type fastWriter struct {
	header http.Header
	status int
	body   []byte
	// stored is the response given to WriteStored when hasStored is set.
	// Then status is its status and body is unused.
	stored    passthrough.Stored
	hasStored bool
}

// WriteStored implements [passthrough.StoredWriter]. A status without a
// body, which the interface rules out, is taken apart into the header map
// like any other response.
func (w *fastWriter) WriteStored(s passthrough.Stored) {
	if w.status != 0 {
		return
	}
	if !statusHasBody(s.Status) {
		w.stored = s
		w.unstore()
		return
	}
	w.status = s.Status
	w.stored = s
	w.hasStored = true
}

// unstore moves the stored response into the header map and body, as if
// the responder had written it through Header, WriteHeader and Write.
func (w *fastWriter) unstore() {
	s := w.stored
	w.stored, w.hasStored = passthrough.Stored{}, false
	for _, f := range s.Fields {
		w.header[f.Name] = f.Values[:len(f.Values):len(f.Values)]
	}
	for _, f := range s.Extra {
		w.header[f.Name] = append(w.header[f.Name], f.Values...)
	}
	w.status = s.Status
	w.body = append(w.body[:0], s.Body...)
}

func statusHasBody(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

func (w *fastWriter) Header() http.Header { return w.header }

func (w *fastWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *fastWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.body = append(w.body, p...)
	return len(p), nil
}

// respond builds the request and lets responder serve it into x.w. It
// reports whether responder served it.
func (x *fastExchange) respond(c *fastConn, responder passthrough.Responder, host, path string) bool {
	req := &x.req
	h := requestHeader(req.fields)
	u := &url.URL{Path: path}
	if q := len(req.path); q < len(req.target) {
		u.RawQuery = string(req.target[q+1:])
	}
	// A responder serves the request itself, so no upstream attempt is
	// recorded.
	ctx := context.WithValue(c.baseContext(), requestStateKey{}, &x.rs)
	r := (&http.Request{
		Method:     req.method,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Body:       http.NoBody,
		Host:       host,
		RequestURI: string(req.target),
		RemoteAddr: c.remoteAddr(),
	}).WithContext(ctx)

	if x.w.header == nil {
		x.w.header = http.Header{}
	}
	clear(x.w.header)
	x.w.status = 0
	x.w.body = x.w.body[:0]
	x.w.stored, x.w.hasStored = passthrough.Stored{}, false
	// The listener sets the request ID first on the net/http path too.
	x.w.header["X-Request-Id"] = []string{x.rs.id}
	return responder.RespondFast(&x.w, r)
}

// requestHeader builds the header map of a parsed request head. One
// string contains every value and one slice every first value of a name, so
// the map costs three allocations and not two per field.
func requestHeader(fields []h1Field) http.Header {
	h := make(http.Header, len(fields))
	size := 0
	for _, f := range fields {
		size += len(f.value)
	}
	all := make([]byte, 0, size)
	for _, f := range fields {
		all = append(all, f.value...)
	}
	values, firsts := string(all), make([]string, len(fields))
	at := 0
	for i, f := range fields {
		name := fieldName(f.name)
		v := values[at : at+len(f.value)]
		at += len(f.value)
		if prev, ok := h[name]; ok {
			h[name] = append(prev, v)
			continue
		}
		firsts[i] = v
		h[name] = firsts[i : i+1 : i+1]
	}
	return h
}

// fieldName returns the canonical form of a request field name, without
// allocating for the common names that clients send in canonical form.
func fieldName(b []byte) string {
	switch string(b) {
	case "Host":
		return "Host"
	case "User-Agent":
		return "User-Agent"
	case "Accept":
		return "Accept"
	case "Accept-Encoding":
		return "Accept-Encoding"
	case "Accept-Language":
		return "Accept-Language"
	case "Cache-Control":
		return "Cache-Control"
	case "Connection":
		return "Connection"
	case "Cookie":
		return "Cookie"
	case "If-None-Match":
		return "If-None-Match"
	case "If-Modified-Since":
		return "If-Modified-Since"
	case "Referer":
		return "Referer"
	}
	return http.CanonicalHeaderKey(string(b))
}

// writeResponded writes the response that respond collected, as net/http
// would write it: with Date, a Content-Length when the body is known and
// allowed, a sniffed Content-Type when none was set, and no body for HEAD,
// 1xx, 204 and 304. It reports whether the client connection is usable.
func (x *fastExchange) writeResponded(bw *bufio.Writer, draining bool) bool {
	w := &x.w
	if w.hasStored {
		closeConn := x.req.close || draining
		if !closeConn || !hasField(w.stored.Fields, "Connection") {
			return x.writeStored(bw, closeConn)
		}
		w.unstore()
	}
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	for _, edit := range x.edits {
		edit(status, w.header)
	}
	bodyAllowed := status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
	if bodyAllowed {
		if _, ok := w.header["Content-Type"]; !ok && len(w.body) > 0 {
			w.header.Set("Content-Type", http.DetectContentType(w.body))
		}
		if w.header.Get("Content-Length") == "" && x.req.method != "HEAD" {
			w.header.Set("Content-Length", strconv.Itoa(len(w.body)))
		}
	} else {
		w.header.Del("Content-Length")
		w.header.Del("Transfer-Encoding")
	}
	if _, ok := w.header["Date"]; !ok {
		w.header["Date"] = []string{string(appendDate(nil))}
	}
	closeConn := x.req.close || draining
	if closeConn {
		w.header.Set("Connection", "close")
	}

	b := appendStatusLine(x.out[:0], status)
	for name, values := range w.header {
		for _, v := range values {
			b = appendField(b, name, v)
		}
	}
	b = append(b, "\r\n"...)
	if bodyAllowed && x.req.method != "HEAD" {
		b = append(b, w.body...)
		x.sum.bytesOut = int64(len(w.body))
	}
	x.out = b
	x.sum.status = status
	if _, err := bw.Write(b); err != nil {
		x.sum.clientGone = true
		return false
	}
	return !closeConn
}

// writeStored writes the response a responder gave to WriteStored: its
// stored head as it is, then the fields of the header map whose names the
// stored head lacks, then the extra fields and those writeResponded adds.
func (x *fastExchange) writeStored(bw *bufio.Writer, closeConn bool) bool {
	w := &x.w
	s := &w.stored
	head := &x.head
	*head = storedHead{s: s, header: w.header}
	defer func() { *head = storedHead{} }()
	for _, edit := range x.edits {
		edit(s.Status, head)
	}
	// Only a missing Content-Type is sniffed: net/http keeps an empty one
	// as the backend sent it.
	if !head.has("Content-Type") && len(s.Body) > 0 {
		head.Add("Content-Type", http.DetectContentType(s.Body))
	}
	if head.Get("Content-Length") == "" && x.req.method != "HEAD" {
		head.Add("Content-Length", strconv.Itoa(len(s.Body)))
	}
	if !head.has("Date") {
		head.Add("Date", string(appendDate(nil)))
	}

	b := appendStatusLine(x.out[:0], s.Status)
	b = append(b, s.Wire...)
	for name, values := range w.header {
		if hasField(s.Fields, name) || closeConn && name == "Connection" {
			continue
		}
		for _, v := range values {
			b = appendField(b, name, v)
		}
	}
	for _, f := range s.Extra {
		if closeConn && f.Name == "Connection" {
			continue
		}
		for _, v := range f.Values {
			b = appendField(b, f.Name, v)
		}
	}
	if closeConn {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, "\r\n"...)
	if x.req.method != "HEAD" {
		b = append(b, s.Body...)
		x.sum.bytesOut = int64(len(s.Body))
	}
	x.out = b
	x.sum.status = s.Status
	w.stored = passthrough.Stored{}
	if _, err := bw.Write(b); err != nil {
		x.sum.clientGone = true
		return false
	}
	return !closeConn
}

// appendStatusLine appends the status line of an HTTP/1.1 response as
// net/http writes it, which gives a code without a standard reason phrase
// the phrase "status code N".
func appendStatusLine(b []byte, status int) []byte {
	b = append(b, "HTTP/1.1 "...)
	text := http.StatusText(status)
	if text == "" {
		b = fmt.Appendf(b, "%03d status code %d\r\n", status, status)
		return b
	}
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, text...)
	return append(b, "\r\n"...)
}

// appendField appends the field line "name: v". A CR or LF in v becomes
// a space, as net/http writes it, since a line break would end the field
// early.
func appendField(b []byte, name, v string) []byte {
	b = append(b, name...)
	b = append(b, ": "...)
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		b = append(b, c)
	}
	return append(b, "\r\n"...)
}

func hasField(fields []passthrough.Field, name string) bool {
	for _, f := range fields {
		if f.Name == name {
			return true
		}
	}
	return false
}

// storedHead is the [passthrough.Head] of a stored response: its fields,
// then the header map's fields that the stored ones do not name, then the
// extra fields, in the order writeStored writes them. Add appends to the
// extra fields.
type storedHead struct {
	s      *passthrough.Stored
	header http.Header
}

func (h *storedHead) Get(name string) string {
	if v := h.Values(name); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (h *storedHead) Values(name string) []string {
	name = textproto.CanonicalMIMEHeaderKey(name)
	var out []string
	found := false
	for _, f := range h.s.Fields {
		if f.Name == name {
			out, found = f.Values, true
		}
	}
	if !found {
		out = h.header[name]
	}
	for _, f := range h.s.Extra {
		if f.Name != name {
			continue
		}
		if len(out) == 0 {
			out = f.Values
			continue
		}
		out = append(out[:len(out):len(out)], f.Values...)
	}
	return out
}

// has reports whether the head has a field named name (canonical), even
// one with an empty value.
func (h *storedHead) has(name string) bool {
	if hasField(h.s.Fields, name) || hasField(h.s.Extra, name) {
		return true
	}
	_, ok := h.header[name]
	return ok
}

func (h *storedHead) Add(name, value string) {
	h.s.Extra = append(h.s.Extra, passthrough.Field{Name: textproto.CanonicalMIMEHeaderKey(name), Values: []string{value}})
}
