package config

import (
	"fmt"
	"strings"
)

// FieldError is one problem found in a configuration file, tied to the key
// path where it occurs (for example "l7.upstreams[1].backends[0].address").
type FieldError struct {
	Path string
	Line int // 1-based line in the file, or 0 when unknown
	Msg  string
}

func (e FieldError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s: %s (line %d)", e.Path, e.Msg, e.Line)
	}
	return fmt.Sprintf("%s: %s", e.Path, e.Msg)
}

// Errors is every problem found in one configuration, in file order.
type Errors []FieldError

// maxErrorLines bounds how many errors Error lists, so that a reload of a
// broken file cannot write a log line of megabytes. Callers that print
// every error, such as tidegate check, range over Errors instead.
const maxErrorLines = 20

func (es Errors) Error() string {
	shown := es[:min(len(es), maxErrorLines)]
	lines := make([]string, len(shown), len(shown)+1)
	for i, e := range shown {
		lines[i] = e.Error()
	}
	if n := len(es) - len(shown); n > 0 {
		lines = append(lines, fmt.Sprintf("... and %d more", n))
	}
	return fmt.Sprintf("%d configuration error(s):\n  %s", len(es), strings.Join(lines, "\n  "))
}

// add records a problem at path. Callers pass the bad value already quoted
// into msg so the message reads like `"10.0.0.1" is missing a port`.
func (es *Errors) add(path, format string, args ...any) {
	*es = append(*es, FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// err returns es as an error, or nil when it is empty.
func (es Errors) err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
