package inspect

import (
	"bytes"
	"math"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/tidegate/tidegate/shared/config"
)

// Limits bounds the framing of requests on one connection. A zero value
// switches a bound off, except that header bytes default to
// [http.DefaultMaxHeaderBytes] and the request line to the header bytes,
// because the wrapper holds a head in memory until it is complete.
type Limits struct {
	MaxRequestLine int   // request line bytes without CRLF; longer gets 414
	MaxURILength   int   // request target bytes; longer gets 414
	MaxHeaderBytes int   // header and trailer lines with CRLFs; more gets 431
	MaxHeaderCount int   // header fields; more gets 431
	MaxBodyBytes   int64 // declared or chunked body; larger gets 413
	// HeaderTimeout bounds the time from the first byte of a request head
	// (or from the accept, for the first request) to its end.
	HeaderTimeout time.Duration
	// BodyTimeout bounds each wait for body bytes while the server reads
	// the body.
	BodyTimeout time.Duration
}

// Rejection describes a request rejected on the byte stream.
type Rejection struct {
	Status int    // HTTP status sent, such as 400
	Reason string // stable snake_case reason, used as a metric label
	// Client is the connection's remote address, which is the client from
	// the PROXY header when the wrapped connection decoded one. It is nil
	// for rejections by the middlewares, which log the client themselves.
	Client net.Addr
}

// Rejection reasons. Each is sent with the status listed in reasonStatus.
const (
	ReasonBareLF             = "bare_lf"
	ReasonBareCR             = "bare_cr"
	ReasonBadRequestLine     = "bad_request_line"
	ReasonRequestLineTooLong = "request_line_too_long"
	ReasonURITooLong         = "uri_too_long"
	ReasonBadVersion         = "unsupported_version"
	ReasonObsFold            = "obsolete_line_folding"
	ReasonSpaceBeforeColon   = "whitespace_before_colon"
	ReasonBadHeaderName      = "bad_header_name"
	ReasonControlChar        = "control_character_in_header"
	ReasonHeadersTooLarge    = "headers_too_large"
	ReasonTooManyHeaders     = "too_many_headers"
	ReasonHostCount          = "missing_or_repeated_host"
	ReasonCLAndTE            = "content_length_with_transfer_encoding"
	ReasonSeveralCL          = "several_content_lengths"
	ReasonBadCL              = "invalid_content_length"
	ReasonTEInHTTP10         = "transfer_encoding_in_http10"
	ReasonTENotChunked       = "transfer_encoding_not_final_chunked"
	ReasonTEUnsupported      = "unsupported_transfer_coding"
	ReasonBadChunkSize       = "invalid_chunk_size"
	ReasonBadChunkEnd        = "missing_crlf_after_chunk"
	ReasonBodyTooLarge       = "body_too_large"
	ReasonHeaderTimeout      = "header_timeout"
	ReasonBodyTimeout        = "body_timeout"
	ReasonUpgradeBacklog     = "data_before_upgrade"
)

var reasonStatus = map[string]int{
	ReasonRequestLineTooLong: http.StatusRequestURITooLong,
	ReasonURITooLong:         http.StatusRequestURITooLong,
	ReasonBadVersion:         http.StatusHTTPVersionNotSupported,
	ReasonHeadersTooLarge:    http.StatusRequestHeaderFieldsTooLarge,
	ReasonTooManyHeaders:     http.StatusRequestHeaderFieldsTooLarge,
	ReasonTEUnsupported:      http.StatusNotImplemented,
	ReasonBodyTooLarge:       http.StatusRequestEntityTooLarge,
	ReasonHeaderTimeout:      http.StatusRequestTimeout,
	ReasonBodyTimeout:        http.StatusRequestTimeout,
}

func reject(reason string) *Rejection {
	status, ok := reasonStatus[reason]
	if !ok {
		status = http.StatusBadRequest
	}
	return &Rejection{Status: status, Reason: reason}
}

type parseState int

const (
	stateHead      parseState = iota
	stateBody                 // Content-Length body
	stateChunkSize            // chunk-size line
	stateChunkData
	stateChunkEnd // CRLF after chunk data
	stateTrailer
	stateAwaitUpgrade // request asked to upgrade; waiting for the response
	statePassthrough  // no longer HTTP/1.x (upgraded or h2 preface)
)

const (
	maxChunkLine      = 4096 // chunk-size line with extensions
	maxLeadingCRLF    = 4    // empty lines tolerated before a request line
	maxUpgradeBacklog = 64 << 10
	// maxHeldBody bounds how much of a chunked request is held back until
	// its framing is known to be valid. Smaller bodies reach the server
	// only once complete and valid.
	//
	// NOTE: a client that streams a small chunked body slowly on purpose
	// (events over one long request) waits until 64KiB or the end arrive.
	maxHeldBody = 64 << 10
)

// framer validates an HTTP/1.x request stream incrementally and appends the
// validated bytes to out. It holds a request head back until the head is
// complete and valid, and a chunked request until its whole body is valid
// (up to maxHeldBody). So a rejected request never reaches the HTTP server. A framer is used by one
// goroutine.
type framer struct {
	lim   Limits
	state parseState
	out   []byte

	// line is the current head, chunk-size or trailer line being collected,
	// and held the validated bytes not yet released to out.
	line   []byte
	held   []byte
	prevCR bool

	// Per-request head state.
	sawRequestLine bool
	leadingCRLF    int
	headBytes      int // bytes of the current request seen in stateHead
	headerBytes    int
	headerCount    int
	http10         bool
	clCount        int
	contentLength  int64
	teCodings      []string
	hasTE          bool
	hostCount      int
	expectContinue bool
	upgrade        bool

	// holdForChunk delays releasing a chunked request's head until the whole
	// body is valid or maxHeldBody bytes are held.
	holdForChunk bool
	remaining    int64 // body or chunk bytes left
	bodyBytes    int64
	chunkEndSeen int

	// delivered counts request heads released to out, and lastUpgrade
	// records whether the newest of them asked for an upgrade.
	delivered   int
	lastUpgrade bool
}

func newFramer(lim Limits) *framer {
	if lim.MaxHeaderBytes <= 0 {
		lim.MaxHeaderBytes = http.DefaultMaxHeaderBytes
	}
	if lim.MaxRequestLine <= 0 {
		lim.MaxRequestLine = lim.MaxHeaderBytes
	}
	return &framer{lim: lim}
}

// inHead reports whether the framer is between requests or inside a head.
func (f *framer) inHead() bool { return f.state == stateHead }

// inBody reports whether the framer is inside a request body or trailer.
func (f *framer) inBody() bool {
	switch f.state {
	case stateBody, stateChunkSize, stateChunkData, stateChunkEnd, stateTrailer:
		return true
	}
	return false
}

// feed validates data and appends what may be released to f.out. It stops
// at the first violation and returns it.
func (f *framer) feed(data []byte) *Rejection {
	for len(data) > 0 {
		var n int
		var rej *Rejection
		switch f.state {
		case stateHead:
			n, rej = f.feedHead(data)
		case stateBody:
			n = f.copyBody(data)
			if f.remaining == 0 {
				f.endRequest()
			}
		case stateChunkSize:
			n, rej = f.feedLine(data, maxChunkLine, ReasonBadChunkSize, f.chunkSizeLine)
		case stateChunkData:
			n = int(min(int64(len(data)), f.remaining))
			f.emit(data[:n])
			f.remaining -= int64(n)
			if f.remaining == 0 {
				f.state = stateChunkEnd
				f.chunkEndSeen = 0
			}
		case stateChunkEnd:
			n, rej = f.feedChunkEnd(data)
		case stateTrailer:
			n, rej = f.feedLine(data, f.lim.MaxHeaderBytes, ReasonHeadersTooLarge, f.trailerLine)
		case stateAwaitUpgrade:
			if len(f.held)+len(data) > maxUpgradeBacklog {
				return reject(ReasonUpgradeBacklog)
			}
			f.held = append(f.held, data...)
			n = len(data)
		case statePassthrough:
			f.out = append(f.out, data...)
			n = len(data)
		}
		if rej != nil {
			return rej
		}
		data = data[n:]
	}
	return nil
}

func (f *framer) copyBody(data []byte) int {
	n := int(min(int64(len(data)), f.remaining))
	f.out = append(f.out, data[:n]...)
	f.remaining -= int64(n)
	return n
}

// lineEnd checks the bytes of data that continue the current CRLF-terminated
// line, up to and including its LF, and updates f.prevCR. It returns how
// many bytes belong to the line and whether the line ends with them.
//
// room is how many more bytes the line may take before the limit behind
// tooLong is crossed, math.MaxInt for none. When several rules break, the
// rejection is for the earliest offending byte, and at one byte a crossed
// limit goes before a bare CR or LF. On a rejection n counts the bytes up
// to and including the offending one.
func (f *framer) lineEnd(data []byte, room int, tooLong string) (n int, end bool, rej *Rejection) {
	n = len(data)
	if lf := bytes.IndexByte(data, '\n'); lf >= 0 {
		n, end = lf+1, true
	}
	text := data[:n]
	if end {
		text = text[:n-1]
	}

	// bad is the index of the first byte that breaks the CRLF rules, or -1.
	bad, reason := -1, ""
	if f.prevCR && data[0] != '\n' {
		bad, reason = 0, ReasonBareCR
	} else if cr := bytes.IndexByte(text, '\r'); cr >= 0 && cr < len(text)-1 {
		// text contains no LF, so the byte after this CR is not an LF.
		bad, reason = cr+1, ReasonBareCR
	} else if end && (len(text) == 0 && !f.prevCR || len(text) > 0 && cr != len(text)-1) {
		bad, reason = n-1, ReasonBareLF
	}

	if room < n {
		if over := max(room, 0); bad < 0 || over <= bad {
			return over + 1, false, reject(tooLong)
		}
	}
	if bad >= 0 {
		return bad + 1, false, reject(reason)
	}
	f.prevCR = !end && data[n-1] == '\r'
	return n, end, nil
}

// headRoom returns how many more bytes the current head line may take and
// the reason for crossing that limit. All header lines count against
// MaxHeaderBytes together, and the request line with its CRLF against
// MaxRequestLine+2.
func (f *framer) headRoom() (int, string) {
	switch {
	case f.sawRequestLine && f.lim.MaxHeaderBytes > 0:
		return f.lim.MaxHeaderBytes - f.headerBytes, ReasonHeadersTooLarge
	case f.sawRequestLine:
		return math.MaxInt, ""
	case f.lim.MaxRequestLine > 0:
		return f.lim.MaxRequestLine + 2 - len(f.line), ReasonRequestLineTooLong
	}
	return math.MaxInt, ""
}

// feedHead scans data a line at a time. A line that starts and ends in data
// is checked where it lies, and only a line cut by the end of data is
// copied to f.line to wait for its rest.
func (f *framer) feedHead(data []byte) (int, *Rejection) {
	pos := 0
	for pos < len(data) {
		room, tooLong := f.headRoom()
		n, end, rej := f.lineEnd(data[pos:], room, tooLong)
		f.headBytes += n
		if f.sawRequestLine {
			f.headerBytes += n
		}
		if rej != nil {
			return pos + n, rej
		}
		segment := data[pos : pos+n]
		pos += n
		if !end {
			f.line = append(f.line, segment...)
			continue
		}

		// line is the whole line with its CRLF.
		line := segment
		if len(f.line) > 0 {
			f.line = append(f.line, segment...)
			line = f.line
		}
		text := line[:len(line)-2]
		switch {
		case !f.sawRequestLine && len(text) == 0:
			// RFC 9112 section 2.2 has servers skip empty lines before a
			// request line, and the limit keeps a client from sending
			// them without end.
			f.leadingCRLF++
			if f.leadingCRLF > maxLeadingCRLF {
				return pos, reject(ReasonBadRequestLine)
			}
			f.line = f.line[:0]
			continue
		case !f.sawRequestLine:
			rej = f.requestLine(text)
		case len(text) == 0:
			f.held = append(f.held, line...)
			f.line = f.line[:0]
			if rej := f.endHead(); rej != nil {
				return pos, rej
			}
			if f.state == statePassthrough {
				f.out = append(f.out, data[pos:]...)
				return len(data), nil
			}
			return pos, nil
		default:
			rej = f.headerLine(text)
		}
		if rej != nil {
			return pos, rej
		}
		f.held = append(f.held, line...)
		f.line = f.line[:0]
	}
	return len(data), nil
}

func (f *framer) requestLine(line []byte) *Rejection {
	f.sawRequestLine = true
	if f.lim.MaxRequestLine > 0 && len(line) > f.lim.MaxRequestLine {
		return reject(ReasonRequestLineTooLong)
	}
	method, rest, ok1 := bytes.Cut(line, []byte{' '})
	target, version, ok2 := bytes.Cut(rest, []byte{' '})
	if !ok1 || !ok2 || !isToken(method) || len(target) == 0 {
		return reject(ReasonBadRequestLine)
	}
	for _, c := range target {
		if c <= ' ' || c >= 0x7f {
			return reject(ReasonBadRequestLine)
		}
	}
	if f.lim.MaxURILength > 0 && len(target) > f.lim.MaxURILength {
		return reject(ReasonURITooLong)
	}
	switch string(version) {
	case "HTTP/1.1":
	case "HTTP/1.0":
		f.http10 = true
	case "HTTP/2.0":
		if string(method) == "PRI" && string(target) == "*" {
			// The HTTP/2 connection preface: the rest is h2 framing.
			f.upgrade = true
			return nil
		}
		return reject(ReasonBadVersion)
	default:
		if len(version) == 8 && bytes.HasPrefix(version, []byte("HTTP/")) && version[6] == '.' {
			return reject(ReasonBadVersion)
		}
		return reject(ReasonBadRequestLine)
	}
	return nil
}

func (f *framer) headerLine(line []byte) *Rejection {
	if line[0] == ' ' || line[0] == '\t' {
		return reject(ReasonObsFold)
	}
	f.headerCount++
	if f.lim.MaxHeaderCount > 0 && f.headerCount > f.lim.MaxHeaderCount {
		return reject(ReasonTooManyHeaders)
	}
	name, value, rej := splitField(line)
	if rej != nil {
		return rej
	}
	switch {
	case bytes.EqualFold(name, []byte("Content-Length")):
		f.clCount++
		if f.clCount > 1 || bytes.IndexByte(value, ',') >= 0 {
			return reject(ReasonSeveralCL)
		}
		n, ok := parseDecimal(value)
		if !ok {
			return reject(ReasonBadCL)
		}
		f.contentLength = n
	case bytes.EqualFold(name, []byte("Transfer-Encoding")):
		f.hasTE = true
		for coding := range strings.SplitSeq(string(value), ",") {
			if coding = strings.Trim(coding, " \t"); coding != "" {
				f.teCodings = append(f.teCodings, strings.ToLower(coding))
			}
		}
	case bytes.EqualFold(name, []byte("Host")):
		f.hostCount++
	case bytes.EqualFold(name, []byte("Expect")):
		f.expectContinue = strings.EqualFold(string(value), "100-continue")
	case bytes.EqualFold(name, []byte("Upgrade")):
		f.upgrade = len(value) > 0
	}
	return nil
}

// splitField splits a header or trailer line into its name and value with
// surrounding whitespace trimmed, and checks both. Both alias line.
func splitField(line []byte) ([]byte, []byte, *Rejection) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return nil, nil, reject(ReasonBadHeaderName)
	}
	name := line[:colon]
	if last := name[len(name)-1]; last == ' ' || last == '\t' {
		return nil, nil, reject(ReasonSpaceBeforeColon)
	}
	if !isToken(name) {
		return nil, nil, reject(ReasonBadHeaderName)
	}
	value := bytes.Trim(line[colon+1:], " \t")
	for _, c := range value {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return nil, nil, reject(ReasonControlChar)
		}
	}
	return name, value, nil
}

// endHead checks the framing of a complete head and releases it, or holds
// it while a chunked body is checked.
func (f *framer) endHead() *Rejection {
	if f.state == stateHead && f.upgrade && !f.hasTE && f.clCount == 0 && f.hostCount == 0 && f.headerCount == 0 && !f.http10 {
		// "PRI * HTTP/2.0" followed by the empty line of the preface.
		f.release()
		f.state = statePassthrough
		return nil
	}
	if f.hostCount > 1 || (f.hostCount == 0 && !f.http10) {
		return reject(ReasonHostCount)
	}
	if f.hasTE {
		if f.clCount > 0 {
			return reject(ReasonCLAndTE)
		}
		if f.http10 {
			return reject(ReasonTEInHTTP10)
		}
		codings := f.teCodings
		if len(codings) == 0 || codings[len(codings)-1] != "chunked" {
			return reject(ReasonTENotChunked)
		}
		for _, c := range codings[:len(codings)-1] {
			if c == "chunked" {
				return reject(ReasonTENotChunked)
			}
		}
		if len(codings) > 1 {
			// Go's server decodes only chunked, so it could not read the
			// body of for example "gzip, chunked" anyway.
			return reject(ReasonTEUnsupported)
		}
		f.state = stateChunkSize
		// A client that sent Expect: 100-continue waits for the interim
		// response before sending any chunk, so the head cannot wait for one.
		f.holdForChunk = !f.expectContinue
		if !f.holdForChunk {
			f.release()
		}
		return nil
	}
	if f.clCount == 1 {
		if f.lim.MaxBodyBytes > 0 && f.contentLength > f.lim.MaxBodyBytes {
			return reject(ReasonBodyTooLarge)
		}
		f.release()
		f.remaining = f.contentLength
		if f.remaining > 0 {
			f.state = stateBody
			return nil
		}
		f.endRequest()
		return nil
	}
	f.release()
	f.endRequest()
	return nil
}

var crlf = []byte("\r\n")

// emit passes validated body bytes on, or holds them with the head while
// holdForChunk is set and the held bytes stay within maxHeldBody.
func (f *framer) emit(b []byte) {
	if !f.holdForChunk {
		f.out = append(f.out, b...)
		return
	}
	f.held = append(f.held, b...)
	if len(f.held) > maxHeldBody {
		f.holdForChunk = false
		f.release()
	}
}

// release moves the held head to out.
func (f *framer) release() {
	f.out = append(f.out, f.held...)
	f.held = f.held[:0]
	f.delivered++
	f.lastUpgrade = f.upgrade
}

// endRequest resets the per-request state after a complete request.
func (f *framer) endRequest() {
	upgrade := f.upgrade
	*f = framer{lim: f.lim, out: f.out, line: f.line[:0], held: f.held[:0], teCodings: f.teCodings[:0],
		delivered: f.delivered, lastUpgrade: f.lastUpgrade}
	if upgrade {
		f.state = stateAwaitUpgrade
	}
}

// resumeAfterUpgrade continues after the response to an upgrade request:
// accepted switches to passthrough, otherwise the held bytes are parsed as
// the next request.
func (f *framer) resumeAfterUpgrade(accepted bool) *Rejection {
	held := append([]byte(nil), f.held...)
	f.held = f.held[:0]
	if accepted {
		f.state = statePassthrough
		f.out = append(f.out, held...)
		return nil
	}
	f.state = stateHead
	return f.feed(held)
}

// feedLine collects a CRLF-terminated line of at most maxLen bytes and calls
// done with it, without the CRLF.
func (f *framer) feedLine(data []byte, maxLen int, tooLong string, done func(line []byte) *Rejection) (int, *Rejection) {
	room := math.MaxInt
	if maxLen > 0 {
		room = maxLen - len(f.line)
	}
	n, end, rej := f.lineEnd(data, room, tooLong)
	if rej != nil {
		return n, rej
	}
	f.line = append(f.line, data[:n]...)
	if !end {
		return n, nil
	}
	rej = done(f.line[:len(f.line)-2])
	f.line = f.line[:0]
	return n, rej
}

func (f *framer) chunkSizeLine(line []byte) *Rejection {
	digits := 0
	var size int64
	for digits < len(line) {
		v, ok := hexValue(line[digits])
		if !ok {
			break
		}
		size = size<<4 | int64(v)
		digits++
	}
	// 15 hex digits stay below 2^60, so size cannot overflow.
	if digits == 0 || digits > 15 {
		return reject(ReasonBadChunkSize)
	}
	// RFC 9112 allows whitespace before ";", but Go's chunked reader
	// does not, so such a body could never be read.
	ext := line[digits:]
	if len(ext) > 0 && ext[0] != ';' {
		return reject(ReasonBadChunkSize)
	}
	for _, c := range ext {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return reject(ReasonBadChunkSize)
		}
	}
	f.bodyBytes += size
	if f.lim.MaxBodyBytes > 0 && f.bodyBytes > f.lim.MaxBodyBytes {
		return reject(ReasonBodyTooLarge)
	}
	f.emit(line)
	f.emit(crlf)
	if size == 0 {
		f.state = stateTrailer
		f.headerBytes = 0
		return nil
	}
	f.remaining = size
	f.state = stateChunkData
	return nil
}

func (f *framer) feedChunkEnd(data []byte) (int, *Rejection) {
	for i, c := range data {
		want := byte('\r')
		if f.chunkEndSeen == 1 {
			want = '\n'
		}
		if c != want {
			return i + 1, reject(ReasonBadChunkEnd)
		}
		f.chunkEndSeen++
		if f.chunkEndSeen == 2 {
			f.emit(crlf)
			f.state = stateChunkSize
			return i + 1, nil
		}
	}
	return len(data), nil
}

func (f *framer) trailerLine(line []byte) *Rejection {
	f.headerBytes += len(line) + 2
	if f.lim.MaxHeaderBytes > 0 && f.headerBytes > f.lim.MaxHeaderBytes {
		return reject(ReasonHeadersTooLarge)
	}
	if len(line) == 0 {
		f.emit(crlf)
		if f.holdForChunk {
			f.release()
		}
		f.endRequest()
		return nil
	}
	if line[0] == ' ' || line[0] == '\t' {
		return reject(ReasonObsFold)
	}
	f.headerCount++
	if f.lim.MaxHeaderCount > 0 && f.headerCount > f.lim.MaxHeaderCount {
		return reject(ReasonTooManyHeaders)
	}
	if _, _, rej := splitField(line); rej != nil {
		return rej
	}
	f.emit(line)
	f.emit(crlf)
	return nil
}

func hexValue(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// parseDecimal parses 1*DIGIT of at most 18 digits, so it cannot overflow.
func parseDecimal(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// isToken reports whether b is a non-empty RFC 9110 token.
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenChar[c] {
			return false
		}
	}
	return true
}

var tokenChar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// LimitsFromConfig returns the limits of a listener: max_header_bytes and
// read_header_timeout from the listener, the rest from its limits section.
func LimitsFromConfig(l config.Listener) Limits {
	return Limits{
		MaxRequestLine: int(l.Limits.MaxRequestLine),
		MaxURILength:   int(l.Limits.MaxURILength),
		MaxHeaderBytes: int(l.MaxHeaderBytes),
		MaxHeaderCount: l.Limits.MaxHeaderCount,
		MaxBodyBytes:   int64(l.Limits.MaxBodyBytes),
		HeaderTimeout:  l.ReadHeaderTimeout.D(),
		BodyTimeout:    l.Limits.BodyReadTimeout.D(),
	}
}
