// Package accesslog writes one JSON line per proxied request to stdout or to
// a file that can be reopened after log rotation.
package accesslog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Entry is one access-log line. Field names are the JSON keys.
type Entry struct {
	Time       time.Time `json:"time"`
	ClientAddr string    `json:"client_addr"`
	// ConnID is the L4 connection ID from the PROXY v2 unique-ID TLV.
	ConnID     string `json:"conn_id,omitempty"`
	Listener   string `json:"listener"`
	TLSVersion string `json:"tls_version,omitempty"`
	SNI        string `json:"sni,omitempty"`
	Proto      string `json:"proto"`
	Method     string `json:"method"`
	Host       string `json:"host"`
	Path       string `json:"path"`
	// Status is the status sent to the client, or 499 when the client went
	// away before the response was complete.
	Status     int     `json:"status"`
	BytesIn    int64   `json:"bytes_in"`
	BytesOut   int64   `json:"bytes_out"`
	DurationMS float64 `json:"duration_ms"`
	Route      string  `json:"route,omitempty"`
	Upstream   string  `json:"upstream,omitempty"`
	Backend    string  `json:"backend,omitempty"`
	Retries    int     `json:"retries"`
	RequestID  string  `json:"request_id"`
	Error      string  `json:"error,omitempty"`

	PolicyFields
}

// PolicyFields are the access-log fields the policy middlewares set. Their
// JSON keys appear at the top level of the line, and empty ones are left
// out.
type PolicyFields struct {
	// RateLimitResult is "allowed", "delayed" or "rejected" on a route
	// with a rate limit.
	RateLimitResult string `json:"ratelimit_result,omitempty"`
	// RateLimitDelayMS is how long a delayed request waited.
	RateLimitDelayMS float64 `json:"ratelimit_delay_ms,omitempty"`
	// RateLimitRemaining is the number of requests left in the window. It
	// is nil when no limit applied, so 0 stays visible.
	RateLimitRemaining *int `json:"ratelimit_remaining,omitempty"`
	// RateLimitShared is true when Redis made the decision.
	RateLimitShared bool `json:"ratelimit_shared,omitempty"`
	// RewritePath is the path sent to the backend after a path rewrite.
	RewritePath string `json:"rewrite_path,omitempty"`
	// RedirectLocation is the Location of a redirect the route sent.
	RedirectLocation string `json:"redirect_location,omitempty"`
	// FixedResponse is the status of a fixed response the route sent.
	FixedResponse int `json:"fixed_response,omitempty"`
	// ContentEncoding is the encoding the proxy compressed the response
	// with.
	ContentEncoding string `json:"content_encoding,omitempty"`
}

// Logger writes entries. It is safe for concurrent use. A nil *Logger
// discards entries, which is what path "off" returns.
type Logger struct {
	path string

	mu   sync.Mutex
	w    io.Writer
	file *os.File // nil for stdout
	buf  bytes.Buffer
	enc  *json.Encoder
}

// Open returns a logger for path: "stdout", "off" (nil logger) or an
// absolute file path, opened for appending and created if missing.
func Open(path string) (*Logger, error) {
	switch path {
	case "off":
		return nil, nil
	case "stdout", "":
		return newLogger("stdout", os.Stdout, nil), nil
	}
	f, err := openFile(path)
	if err != nil {
		return nil, err
	}
	return newLogger(path, f, f), nil
}

// New returns a logger writing to w, for tests and embedding.
func New(w io.Writer) *Logger {
	return newLogger("", w, nil)
}

func newLogger(path string, w io.Writer, f *os.File) *Logger {
	l := &Logger{path: path, w: w, file: f}
	l.enc = json.NewEncoder(&l.buf)
	l.enc.SetEscapeHTML(false)
	return l
}

func openFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open access log: %w", err)
	}
	return f, nil
}

// Path returns the path the logger was opened with.
func (l *Logger) Path() string {
	if l == nil {
		return "off"
	}
	return l.path
}

// Log writes e as one line. Write errors are returned so the caller can
// count them; the entry is lost.
func (l *Logger) Log(e *Entry) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Reset()
	if err := l.enc.Encode(e); err != nil {
		return fmt.Errorf("encode access log entry: %w", err)
	}
	_, err := l.w.Write(l.buf.Bytes())
	return err
}

// Reopen closes and reopens the log file, so that a file renamed by log
// rotation stops receiving lines. It does nothing for stdout.
func (l *Logger) Reopen() error {
	if l == nil || l.file == nil {
		return nil
	}
	f, err := openFile(l.path)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.file
	l.file, l.w = f, f
	l.mu.Unlock()
	return old.Close()
}

// Close closes the log file. It does nothing for stdout.
func (l *Logger) Close() error {
	if l == nil || l.file == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.file.Close()
}
