package l7

import (
	"bytes"
	"errors"
	"strconv"
)

// This file parses HTTP/1.1 message heads for the fast path (fastpath.go).
// The request parser is a filter, not a validator: it accepts only the
// plain requests the fast path forwards itself and reports anything else as
// not eligible, so that net/http, which validates fully, serves it. The
// response parser is strict, because its input comes from a backend and a
// malformed head becomes a 502.

// maxFastFields caps the header fields of a request the fast path takes
// and of a trailer section it relays.
const maxFastFields = 100

// h1Field is one header field, sliced from the head it was parsed from.
type h1Field struct {
	name, value []byte
	// drop marks fields the proxy does not forward.
	drop bool
}

// h1Request is a request head the fast path can forward.
type h1Request struct {
	method string // "GET" or "HEAD"
	target []byte // origin-form: path and optional query
	path   []byte // target without the query
	host   []byte
	fields []h1Field
	// requestID is the inbound X-Request-Id, nil when absent.
	requestID []byte
	// close is set when the client asked to close after the response.
	close bool
}

// parseFastRequest parses head, which ends with the blank line, into req.
// It returns false when the request is not one the fast path forwards:
// another method or version, a body, an upgrade, an expectation, a target
// that routing would see differently after normalisation or decoding, or
// anything unusual in the framing. req.fields is reused.
func parseFastRequest(head []byte, req *h1Request) bool {
	fields := req.fields[:0]
	*req = h1Request{fields: fields}

	line, rest, ok := cutLine(head)
	if !ok {
		return false
	}
	switch {
	case bytes.HasPrefix(line, []byte("GET ")):
		req.method, line = "GET", line[4:]
	case bytes.HasPrefix(line, []byte("HEAD ")):
		req.method, line = "HEAD", line[5:]
	default:
		return false
	}
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 || !bytes.Equal(line[sp+1:], []byte("HTTP/1.1")) {
		return false
	}
	req.target = line[:sp]
	if !fastTarget(req.target) {
		return false
	}
	req.path = req.target
	if q := bytes.IndexByte(req.target, '?'); q >= 0 {
		req.path = req.target[:q]
	}

	hosts := 0
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return false
		}
		if len(line) == 0 {
			break
		}
		if len(fields) == maxFastFields {
			return false
		}
		f, ok := splitField(line)
		if !ok {
			return false
		}
		switch fieldKind(f.name) {
		case fieldHost:
			hosts++
			req.host = f.value
		case fieldContentLength:
			// GET and HEAD carry no body; an explicit zero length is
			// the same and is not forwarded.
			if !bytes.Equal(f.value, []byte("0")) {
				return false
			}
			f.drop = true
		case fieldConnection:
			close, ok := plainConnection(f.value)
			if !ok {
				return false
			}
			req.close = req.close || close
			f.drop = true
		case fieldHopByHop, fieldForwarding:
			f.drop = true
		case fieldRequestID:
			// The first one counts, as with http.Header.Get on the
			// net/http path.
			if req.requestID == nil {
				req.requestID = f.value
			}
			f.drop = true
		case fieldNotFast:
			return false
		}
		fields = append(fields, f)
	}
	if len(rest) != 0 || hosts != 1 || !fastHost(req.host) {
		return false
	}
	req.fields = fields
	return true
}

// cutLine returns the line at the start of b without its CRLF, and what
// follows. A bare CR or LF makes it fail.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return nil, nil, false
	}
	line = b[:i-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, nil, false
	}
	return line, b[i+1:], true
}

// splitField splits "name: value" and trims the value's optional
// whitespace. It fails on an invalid name, on whitespace before the colon
// (RFC 9112 section 5.1) and on control characters in the value.
func splitField(line []byte) (h1Field, bool) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return h1Field{}, false
	}
	return splitFieldAt(line, line[:colon], colon)
}

// splitResponseField is splitField for a response head or trailer
// section. It removes whitespace before the colon, as RFC 9112 section 5.1
// requires of a proxy, and reports whether there was any.
func splitResponseField(line []byte) (f h1Field, trimmed, ok bool) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return h1Field{}, false, false
	}
	name := bytes.TrimRight(line[:colon], " \t")
	if len(name) == 0 {
		return h1Field{}, false, false
	}
	f, ok = splitFieldAt(line, name, colon)
	return f, len(name) < colon, ok
}

// trimmableField reports whether a response field whose name had
// whitespace before the colon may be forwarded with it removed. Parsers
// disagree on a framing or hop-by-hop field written that way, so such a
// response is rejected rather than forwarded.
func trimmableField(name []byte) bool {
	switch responseFieldKind(name) {
	case fieldOther:
		return !bytes.EqualFold(name, []byte("trailer"))
	case fieldDate, fieldRequestID:
		return true
	}
	return false
}

// splitFieldAt checks name and the value after the colon at colon.
func splitFieldAt(line, name []byte, colon int) (h1Field, bool) {
	for _, c := range name {
		if !isTokenChar(c) {
			return h1Field{}, false
		}
	}
	value := trimOWS(line[colon+1:])
	for _, c := range value {
		if c < ' ' && c != '\t' || c == 0x7f {
			return h1Field{}, false
		}
	}
	return h1Field{name: name, value: value}, true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// fastTarget accepts an origin-form target whose path has no escapes and
// only characters that net/url leaves as they are, and whose query has
// only visible ASCII. Routing then matches the same path as net/http
// would, and the path normalisation check decides the rest.
func fastTarget(t []byte) bool {
	if len(t) == 0 || t[0] != '/' {
		return false
	}
	inQuery := false
	for _, c := range t {
		if inQuery {
			if c < 0x21 || c > 0x7e || c == '#' {
				return false
			}
			continue
		}
		switch {
		case c == '?':
			inQuery = true
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case bytes.IndexByte([]byte("/-._~!$&'()*+,;=:@"), c) >= 0:
		default:
			return false
		}
	}
	return true
}

// fastHost accepts a host with an optional port made of the characters of
// DNS names, IPv4 and bracketed IPv6 literals.
func fastHost(h []byte) bool {
	if len(h) == 0 {
		return false
	}
	for _, c := range h {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '-', c == ':', c == '[', c == ']', c == '_':
		default:
			return false
		}
	}
	return true
}

// plainConnection reads a Connection field that lists only "close" and
// "keep-alive". Other options name hop-by-hop fields, which the fast path
// leaves to net/http.
func plainConnection(v []byte) (close, ok bool) {
	for len(v) > 0 {
		var tok []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = trimOWS(v[:i]), v[i+1:]
		} else {
			tok, v = trimOWS(v), nil
		}
		switch {
		case len(tok) == 0:
		case bytes.EqualFold(tok, []byte("close")):
			close = true
		case bytes.EqualFold(tok, []byte("keep-alive")):
		default:
			return false, false
		}
	}
	return close, true
}

type fieldClass int

const (
	fieldOther fieldClass = iota
	fieldHost
	fieldContentLength
	fieldConnection
	// fieldHopByHop fields end at this hop (RFC 9110 section 7.6.1).
	fieldHopByHop
	// fieldForwarding fields are replaced with the proxy's own view.
	fieldForwarding
	fieldRequestID
	// fieldNotFast fields change framing or semantics in ways the fast
	// path leaves to net/http.
	fieldNotFast
)

// fieldKind classifies a request field name, case-insensitively.
func fieldKind(name []byte) fieldClass {
	switch len(name) {
	case 2:
		if bytes.EqualFold(name, []byte("te")) {
			return fieldNotFast
		}
	case 4:
		if bytes.EqualFold(name, []byte("host")) {
			return fieldHost
		}
	case 6:
		if bytes.EqualFold(name, []byte("expect")) {
			return fieldNotFast
		}
	case 7:
		switch {
		case bytes.EqualFold(name, []byte("upgrade")), bytes.EqualFold(name, []byte("trailer")):
			return fieldNotFast
		}
	case 9:
		if bytes.EqualFold(name, []byte("forwarded")) || bytes.EqualFold(name, []byte("x-real-ip")) {
			return fieldForwarding
		}
	case 10:
		switch {
		case bytes.EqualFold(name, []byte("connection")):
			return fieldConnection
		case bytes.EqualFold(name, []byte("keep-alive")):
			return fieldHopByHop
		}
	case 12:
		if bytes.EqualFold(name, []byte("x-request-id")) {
			return fieldRequestID
		}
	case 13:
		if bytes.EqualFold(name, []byte("http2-settings")) {
			return fieldNotFast
		}
	case 14:
		if bytes.EqualFold(name, []byte("content-length")) {
			return fieldContentLength
		}
	case 16:
		if bytes.EqualFold(name, []byte("proxy-connection")) {
			return fieldHopByHop
		}
	case 17:
		if bytes.EqualFold(name, []byte("transfer-encoding")) {
			return fieldNotFast
		}
	case 18:
		if bytes.EqualFold(name, []byte("proxy-authenticate")) {
			return fieldHopByHop
		}
	case 19:
		if bytes.EqualFold(name, []byte("proxy-authorization")) {
			return fieldHopByHop
		}
	}
	// Every X-Forwarded-* field is replaced or removed, because the
	// connection's client is not a trusted forwarder (see fastEligible).
	if len(name) > 12 && bytes.EqualFold(name[:12], []byte("x-forwarded-")) {
		return fieldForwarding
	}
	return fieldOther
}

// h1Response is a response head read from a backend.
type h1Response struct {
	status int
	reason []byte
	minor  int // 0 or 1
	fields []h1Field
	// contentLength is -1 when the response has none.
	contentLength int64
	chunked       bool
	// close is set when the backend will close the connection after the
	// response.
	close   bool
	hasDate bool
}

var errBadResponse = errors.New("malformed response head from backend")

// parseResponse parses a backend's response head, which ends with the
// blank line. It accepts bare LF line ends, as RFC 9112 section 2.2 allows
// a recipient to, and rejects obsolete line folding, which a proxy may
// reject with 502 (section 5.2). resp.fields is reused.
func parseResponse(head []byte, resp *h1Response) error {
	fields := resp.fields[:0]
	*resp = h1Response{fields: fields, contentLength: -1}

	line, rest := cutLineLF(head)
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return errBadResponse
	}
	switch line[7] {
	case '0':
		resp.minor = 0
		resp.close = true
	case '1':
		resp.minor = 1
	default:
		return errBadResponse
	}
	code := line[9:12]
	if code[0] < '1' || code[0] > '5' || !isDigit(code[1]) || !isDigit(code[2]) {
		return errBadResponse
	}
	resp.status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	if len(line) > 12 {
		if line[12] != ' ' {
			return errBadResponse
		}
		resp.reason = line[13:]
		for _, c := range resp.reason {
			if c < ' ' && c != '\t' || c == 0x7f {
				return errBadResponse
			}
		}
	}

	var sawTE bool
	var connection [][]byte
	for {
		line, rest = cutLineLF(rest)
		if line == nil {
			return errBadResponse
		}
		if len(line) == 0 {
			break
		}
		// The head's size bounds the number of fields, as on the
		// net/http path.
		if line[0] == ' ' || line[0] == '\t' {
			return errBadResponse
		}
		f, trimmed, ok := splitResponseField(line)
		if !ok {
			return errBadResponse
		}
		if trimmed && !trimmableField(f.name) {
			return errBadResponse
		}
		switch responseFieldKind(f.name) {
		case fieldContentLength:
			n, err := strconv.ParseInt(string(f.value), 10, 64)
			if err != nil || n < 0 || f.value[0] == '+' || (resp.contentLength >= 0 && n != resp.contentLength) {
				return errBadResponse
			}
			resp.contentLength = n
			f.drop = true
		case fieldTransferEncoding:
			// As in net/http's transport, HTTP/1.0 framing ignores
			// the field, and HTTP/1.1 framing accepts only a single
			// chunked: with the field dropped, a content coding
			// listed in it would reach the client unnamed.
			f.drop = true
			if resp.minor == 0 {
				break
			}
			if sawTE || !bytes.EqualFold(f.value, []byte("chunked")) {
				return errBadResponse
			}
			sawTE = true
			resp.chunked = true
		case fieldConnection:
			if hasToken(f.value, "close") {
				resp.close = true
			}
			if resp.minor == 0 && hasToken(f.value, "keep-alive") {
				resp.close = false
			}
			connection = append(connection, f.value)
			f.drop = true
		case fieldHopByHop, fieldRequestID:
			f.drop = true
		case fieldDate:
			resp.hasDate = true
		}
		fields = append(fields, f)
	}
	if len(rest) != 0 {
		return errBadResponse
	}
	// Fields named in Connection end at this hop too (RFC 9110 section
	// 7.6.1).
	for _, v := range connection {
		for i := range fields {
			if !fields[i].drop && hasToken(v, string(fields[i].name)) {
				fields[i].drop = true
			}
		}
	}
	if sawTE {
		// Transfer-Encoding overrides Content-Length (RFC 9112 section
		// 6.3).
		resp.contentLength = -1
	}
	resp.fields = fields
	return nil
}

// cutLineLF returns the first line of b without its LF or CRLF. line is
// nil when b has no complete line or the line holds a bare CR.
func cutLineLF(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return nil, nil
	}
	line = b[:i]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, nil
	}
	if line == nil {
		line = b[:0]
	}
	return line, b[i+1:]
}

const fieldTransferEncoding, fieldDate = fieldNotFast + 1, fieldNotFast + 2

// responseFieldKind classifies a response field name.
func responseFieldKind(name []byte) fieldClass {
	switch {
	case bytes.EqualFold(name, []byte("content-length")):
		return fieldContentLength
	case bytes.EqualFold(name, []byte("transfer-encoding")):
		return fieldTransferEncoding
	case bytes.EqualFold(name, []byte("connection")):
		return fieldConnection
	case bytes.EqualFold(name, []byte("date")):
		return fieldDate
	case bytes.EqualFold(name, []byte("x-request-id")):
		return fieldRequestID
	case bytes.EqualFold(name, []byte("keep-alive")),
		bytes.EqualFold(name, []byte("proxy-connection")),
		bytes.EqualFold(name, []byte("upgrade")),
		bytes.EqualFold(name, []byte("proxy-authenticate")),
		bytes.EqualFold(name, []byte("te")):
		return fieldHopByHop
	}
	return fieldOther
}

// hasToken reports whether the comma-separated list v holds tok, ignoring
// case.
func hasToken(v []byte, tok string) bool {
	for len(v) > 0 {
		var t []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			t, v = v[:i], v[i+1:]
		} else {
			t, v = v, nil
		}
		if bytes.EqualFold(trimOWS(t), []byte(tok)) {
			return true
		}
	}
	return false
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// parseChunkSize reads a chunk-size line (RFC 9112 section 7.1) without its
// line end. Chunk extensions are ignored.
func parseChunkSize(line []byte) (int64, error) {
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	line = trimOWS(line)
	if len(line) == 0 || len(line) > 15 {
		return 0, errBadChunk
	}
	var n int64
	for _, c := range line {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, errBadChunk
		}
		n = n<<4 | int64(d)
	}
	return n, nil
}

var errBadChunk = errors.New("malformed chunk from backend")

// Get returns the first value of the field name, ignoring case, for the
// response-head edits of pass-through middlewares.
func (r *h1Response) Get(name string) string {
	for _, f := range r.fields {
		if !f.drop && equalFoldString(f.name, name) {
			return string(f.value)
		}
	}
	return ""
}

// Values returns every value of the field name, ignoring case.
func (r *h1Response) Values(name string) []string {
	var out []string
	for _, f := range r.fields {
		if !f.drop && equalFoldString(f.name, name) {
			out = append(out, string(f.value))
		}
	}
	return out
}

// Add appends a field to the head.
func (r *h1Response) Add(name, value string) {
	r.fields = append(r.fields, h1Field{name: []byte(name), value: []byte(value)})
}

func equalFoldString(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
