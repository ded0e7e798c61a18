package compress

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tidegate/tidegate/l7/passthrough"
	"github.com/tidegate/tidegate/shared/config"
)

// Options are the dependencies of a [Compressor].
type Options struct {
	Route      string
	Registerer prometheus.Registerer // nil registers nothing
	// OnEncode, when set, is called for each response the middleware
	// compresses, with the encoding used, for example to fill access-log
	// fields.
	OnEncode func(r *http.Request, encoding string)
}

// Compressor compresses one route's responses. It is safe for concurrent
// use.
type Compressor struct {
	prefs   []string
	minSize int
	types   []string
	pools   map[string]*sync.Pool
	opts    Options
	metrics *metrics

	// known caches compressibleType by Content-Type value, because a
	// route's responses repeat a few values and parsing one was most of
	// the per-response decision. Writers copy the map under knownMu.
	known   atomic.Pointer[map[string]bool]
	knownMu sync.Mutex
}

// maxKnownTypes bounds the cache of Content-Type values, which backends
// choose: values with varying parameters would otherwise grow it.
const maxKnownTypes = 64

// encoder is the interface of the pooled gzip, brotli and zstd writers.
type encoder interface {
	io.WriteCloser
	Flush() error
	Reset(io.Writer)
}

// New builds the compressor of one route. Encoders are pooled per encoding
// and level, and shared by every route with the same settings.
func New(cfg *config.CompressPolicy, opts Options) (*Compressor, error) {
	c := &Compressor{
		prefs:   cfg.Encodings,
		minSize: int(cfg.MinSize),
		pools:   make(map[string]*sync.Pool, len(cfg.Encodings)),
		opts:    opts,
		metrics: newMetrics(opts.Registerer, opts.Route),
	}
	for _, t := range cfg.ContentTypes {
		c.types = append(c.types, strings.ToLower(t))
	}
	for _, enc := range cfg.Encodings {
		pool, err := encoderPool(enc, cfg)
		if err != nil {
			return nil, err
		}
		c.pools[enc] = pool
	}
	return c, nil
}

type poolKey struct {
	encoding string
	level    int
	window   int
}

var (
	poolsMu sync.Mutex
	pools   = map[poolKey]*sync.Pool{}
)

func encoderPool(enc string, cfg *config.CompressPolicy) (*sync.Pool, error) {
	var key poolKey
	var newEncoder func() encoder
	switch enc {
	case "gzip":
		level := cfg.GzipLevel
		if _, err := gzip.NewWriterLevel(io.Discard, level); err != nil {
			return nil, fmt.Errorf("compress: gzip level %d: %w", level, err)
		}
		key = poolKey{enc, level, 0}
		newEncoder = func() encoder {
			w, _ := gzip.NewWriterLevel(io.Discard, level)
			return w
		}
	case "br":
		level := cfg.BrotliLevel
		key = poolKey{enc, level, 0}
		newEncoder = func() encoder { return brotli.NewWriterLevel(io.Discard, level) }
	case "zstd":
		zopts := []zstd.EOption{
			zstd.WithEncoderLevel(zstdLevel(cfg.ZstdLevel)),
			// One goroutine per encoder and a capped window bound the
			// memory of each pooled encoder.
			zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(int(cfg.ZstdWindow)),
			zstd.WithLowerEncoderMem(true),
		}
		if _, err := zstd.NewWriter(nil, zopts...); err != nil {
			return nil, fmt.Errorf("compress: zstd options: %w", err)
		}
		key = poolKey{enc, cfg.ZstdLevel, int(cfg.ZstdWindow)}
		newEncoder = func() encoder {
			w, _ := zstd.NewWriter(nil, zopts...)
			return w
		}
	default:
		return nil, fmt.Errorf("compress: unknown encoding %q", enc)
	}
	poolsMu.Lock()
	defer poolsMu.Unlock()
	if p, ok := pools[key]; ok {
		return p, nil
	}
	p := &sync.Pool{New: func() any { return newEncoder() }}
	pools[key] = p
	return p, nil
}

func zstdLevel(level int) zstd.EncoderLevel {
	switch level {
	case 1:
		return zstd.SpeedFastest
	case 3:
		return zstd.SpeedBetterCompression
	case 4:
		return zstd.SpeedBestCompression
	}
	return zstd.SpeedDefault
}

// Middleware returns next with its responses compressed when the client
// accepts an offered encoding and the response qualifies: see the package
// documentation for the rules.
func (c *Compressor) Middleware(next http.Handler) http.Handler {
	m := &middleware{c: c, next: next}
	m.vary = m.addVaryIfCompressible
	return m
}

type middleware struct {
	c    *Compressor
	next http.Handler
	// vary is m.addVaryIfCompressible, bound once so that PassThrough
	// does not allocate.
	vary func(int, passthrough.Head)
}

func (m *middleware) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodHead || r.Header.Get("Range") != "" {
		m.next.ServeHTTP(w, r)
		return
	}
	cw := &responseWriter{
		ResponseWriter: w,
		c:              m.c,
		r:              r,
		encoding:       Negotiate(r.Header.Values("Accept-Encoding"), m.c.prefs),
	}
	defer cw.finish()
	m.next.ServeHTTP(cw, r)
}

// PassThrough implements [passthrough.Handler]. HEAD and range requests
// pass untouched. A request that accepts none of the configured encodings
// passes too, and its response gains only the Vary field that a
// compressible response gets.
func (m *middleware) PassThrough(r *passthrough.Request) (http.Handler, func(int, passthrough.Head), bool) {
	if r.Method == http.MethodHead || len(r.Values("Range")) > 0 {
		return m.next, nil, true
	}
	if Negotiate(r.Values("Accept-Encoding"), m.c.prefs) != "" {
		return nil, nil, false
	}
	return m.next, m.vary, true
}

func (m *middleware) addVaryIfCompressible(status int, h passthrough.Head) {
	if m.c.compressible(status, h) {
		addVary(h)
	}
}

// typeAllowed reports whether the media type of a Content-Type value
// matches the allowlist. "type/*" matches every subtype and "type/*+suffix"
// every subtype with that structured suffix.
func (c *Compressor) typeAllowed(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	typ, sub, _ := strings.Cut(mt, "/")
	for _, pattern := range c.types {
		ptyp, psub, _ := strings.Cut(pattern, "/")
		if ptyp != typ && ptyp != "*" {
			continue
		}
		switch {
		case psub == "*":
			return true
		case strings.HasPrefix(psub, "*+"):
			if strings.HasSuffix(sub, psub[1:]) {
				return true
			}
		case psub == sub:
			return true
		}
	}
	return false
}

type writerState int

const (
	statePending   writerState = iota // status and headers not yet decided
	stateBuffering                    // no Content-Length: collecting minSize bytes
	stateIdentity                     // passing the body through
	stateEncoding                     // compressing
)

// responseWriter decides per response whether to compress, and does it.
type responseWriter struct {
	http.ResponseWriter
	c        *Compressor
	r        *http.Request
	encoding string // negotiated, "" when the client accepts none

	state   writerState
	status  int
	buf     []byte
	enc     encoder
	counter countingWriter
	in      int64
}

// countingWriter counts the compressed bytes written.
type countingWriter struct {
	w io.Writer
	n int64
}

func (cw *countingWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	cw.n += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection's writer for
// Hijack and deadlines.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *responseWriter) WriteHeader(status int) {
	if w.state != statePending {
		return
	}
	if status >= 100 && status < 200 && status != http.StatusSwitchingProtocols {
		// Interim responses pass through untouched.
		w.ResponseWriter.WriteHeader(status)
		return
	}
	w.status = status
	w.decide()
}

// decide chooses the state once the status and headers are final.
func (w *responseWriter) decide() {
	h := w.Header()
	if !w.eligible(h) {
		w.startIdentity()
		return
	}
	addVary(h)
	if w.encoding == "" {
		w.startIdentity()
		return
	}
	if cl := h.Get("Content-Length"); cl != "" {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil || n < int64(w.c.minSize) {
			w.startIdentity()
			return
		}
		w.startEncoding()
		return
	}
	w.state = stateBuffering
}

func (w *responseWriter) eligible(h http.Header) bool {
	return w.c.compressible(w.status, h)
}

// compressible reports whether a response with this status and head may
// be compressed, whatever the request accepts.
func (c *Compressor) compressible(status int, h passthrough.Head) bool {
	switch {
	case status < 200, status == http.StatusNoContent, status == http.StatusNotModified,
		status == http.StatusPartialContent:
		return false
	case h.Get("Content-Range") != "":
		return false
	}
	if ce := h.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return false
	}
	for _, v := range h.Values("Cache-Control") {
		if hasToken(v, "no-transform") {
			return false
		}
	}
	ct := h.Get("Content-Type")
	if ct == "" {
		return false
	}
	return c.compressibleType(ct)
}

// compressibleType reports whether a response with Content-Type ct may be
// compressed: its media type is allowed and is not an event stream, which
// must reach the client event by event.
func (c *Compressor) compressibleType(ct string) bool {
	known := c.known.Load()
	if known != nil {
		if ok, found := (*known)[ct]; found {
			return ok
		}
	}
	mt, _, err := mime.ParseMediaType(ct)
	ok := err == nil && mt != "text/event-stream" && c.typeAllowed(ct)

	c.knownMu.Lock()
	defer c.knownMu.Unlock()
	next := map[string]bool{ct: ok}
	if known = c.known.Load(); known != nil {
		if len(*known) >= maxKnownTypes {
			return ok
		}
		for k, v := range *known {
			next[k] = v
		}
	}
	c.known.Store(&next)
	return ok
}

func (w *responseWriter) startIdentity() {
	w.state = stateIdentity
	w.ResponseWriter.WriteHeader(w.status)
	if len(w.buf) > 0 {
		_, _ = w.ResponseWriter.Write(w.buf)
		w.buf = nil
	}
}

func (w *responseWriter) startEncoding() {
	h := w.Header()
	h.Del("Content-Length")
	h.Del("Accept-Ranges")
	h.Set("Content-Encoding", w.encoding)
	if etag := h.Get("ETag"); strings.HasPrefix(etag, `"`) {
		// The encoded bytes differ from the backend's, so the validator
		// can only be weak.
		h.Set("ETag", "W/"+etag)
	}
	w.state = stateEncoding
	w.ResponseWriter.WriteHeader(w.status)
	w.counter = countingWriter{w: w.ResponseWriter}
	w.enc = w.c.pools[w.encoding].Get().(encoder)
	w.enc.Reset(&w.counter)
	if w.c.opts.OnEncode != nil {
		w.c.opts.OnEncode(w.r, w.encoding)
	}
	if len(w.buf) > 0 {
		_, _ = w.enc.Write(w.buf)
		w.buf = nil
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if w.state == statePending {
		if w.Header().Get("Content-Type") == "" {
			// Let net/http's sniffing pick the type, but never compress
			// a body whose type only a guess would give.
			w.status = http.StatusOK
			w.startIdentity()
		} else {
			w.WriteHeader(http.StatusOK)
		}
	}
	switch w.state {
	case stateBuffering:
		w.buf = append(w.buf, p...)
		if len(w.buf) >= w.c.minSize {
			w.startEncoding()
		}
		return len(p), nil
	case stateEncoding:
		w.in += int64(len(p))
		return w.enc.Write(p)
	}
	return w.ResponseWriter.Write(p)
}

// Flush sends what the handler wrote so far. A response of unknown length
// is encoded from its first flush, as nginx does: httputil.ReverseProxy
// flushes after every write when the backend sends no Content-Length, so
// waiting for the minimum size would leave most chunked bodies unencoded.
func (w *responseWriter) Flush() {
	switch w.state {
	case statePending:
		w.WriteHeader(http.StatusOK)
		if w.state == stateBuffering {
			w.startEncoding()
			_ = w.enc.Flush()
		}
	case stateBuffering:
		w.startEncoding()
		_ = w.enc.Flush()
	case stateEncoding:
		_ = w.enc.Flush()
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// FlushError is Flush for http.ResponseController, reporting the error.
func (w *responseWriter) FlushError() error {
	if w.state == stateEncoding {
		if err := w.enc.Flush(); err != nil {
			return err
		}
	} else if w.state != stateIdentity {
		w.Flush()
		return nil
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// finish ends the response after the handler returned.
func (w *responseWriter) finish() {
	switch w.state {
	case statePending:
		// The handler wrote nothing; net/http sends its default response.
		return
	case stateBuffering:
		w.startIdentity()
	case stateEncoding:
		err := w.enc.Close()
		w.enc.Reset(io.Discard)
		w.c.pools[w.encoding].Put(w.enc)
		w.enc = nil
		if err == nil {
			w.c.metrics.observe(w.encoding, w.in, w.counter.n)
		}
	}
}

func addVary(h passthrough.Head) {
	for _, v := range h.Values("Vary") {
		if hasToken(v, "accept-encoding") || hasToken(v, "*") {
			return
		}
	}
	h.Add("Vary", "Accept-Encoding")
}

// hasToken reports whether the comma-separated list v contains token,
// ignoring case and parameters.
func hasToken(v, token string) bool {
	for elem := range strings.SplitSeq(v, ",") {
		name, _, _ := strings.Cut(elem, "=")
		if strings.EqualFold(strings.Trim(name, " \t"), token) {
			return true
		}
	}
	return false
}

type metrics struct {
	responses *prometheus.CounterVec
	bytesIn   *prometheus.CounterVec
	bytesOut  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, route string) *metrics {
	labels := []string{"route", "encoding"}
	responses := registerOrReuse(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tidegate_l7_compress_responses_total",
		Help: "Responses compressed, by route and encoding.",
	}, labels))
	in := registerOrReuse(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tidegate_l7_compress_input_bytes_total",
		Help: "Body bytes before compression, by route and encoding.",
	}, labels))
	out := registerOrReuse(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tidegate_l7_compress_output_bytes_total",
		Help: "Body bytes after compression, by route and encoding.",
	}, labels))
	curry := prometheus.Labels{"route": route}
	return &metrics{
		responses: responses.MustCurryWith(curry),
		bytesIn:   in.MustCurryWith(curry),
		bytesOut:  out.MustCurryWith(curry),
	}
}

func (m *metrics) observe(encoding string, in, out int64) {
	m.responses.WithLabelValues(encoding).Inc()
	m.bytesIn.WithLabelValues(encoding).Add(float64(in))
	m.bytesOut.WithLabelValues(encoding).Add(float64(out))
}

func registerOrReuse[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(fmt.Sprintf("compress: register metrics: %v", err))
	}
	return c
}
