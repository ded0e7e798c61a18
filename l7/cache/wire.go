package cache

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/tidegate/tidegate/l7/passthrough"
)

// setWire fills e.fields and e.wire from e.header, so that a hit on the
// fast path writes the stored head as it is instead of building a header
// map per hit. Fields are sorted by name, so the wire form of an entry
// does not depend on map order.
func (e *entry) setWire() {
	e.fields = make([]passthrough.Field, 0, len(e.header))
	n := 0
	for name, values := range e.header {
		if len(values) == 0 {
			continue
		}
		e.fields = append(e.fields, passthrough.Field{Name: name, Values: values[:len(values):len(values)]})
		for _, v := range values {
			n += len(name) + len(v) + 4
		}
	}
	slices.SortFunc(e.fields, func(a, b passthrough.Field) int { return strings.Compare(a.Name, b.Name) })
	e.wire = make([]byte, 0, n)
	for _, f := range e.fields {
		for _, v := range f.Values {
			e.wire = append(e.wire, f.Name...)
			e.wire = append(e.wire, ": "...)
			e.wire = appendFieldValue(e.wire, v)
			e.wire = append(e.wire, "\r\n"...)
		}
	}
	if !e.headOnly && bodyAllowed(e.status) {
		e.contentLength = []string{strconv.Itoa(len(e.body))}
	}
}

// appendFieldValue appends v with each CR or LF replaced by a space, as
// net/http does when it writes a header, so a value cannot end its line
// early.
func appendFieldValue(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		b = append(b, c)
	}
	return b
}

// wireExtra is the set of fields serveWire adds to a stored head.
type wireExtra struct {
	fields [3]passthrough.Field
	values [2]string
}

// serveWire writes a fresh hit on e through sw: the stored head as it
// is, with Age, Cache-Status and Content-Length for this response.
func serveWire(sw passthrough.StoredWriter, r *http.Request, e *entry, age, cacheStatus string) {
	// The per-response fields share one allocation.
	x := &wireExtra{values: [2]string{age, cacheStatus}}
	x.fields[0] = passthrough.Field{Name: "Age", Values: x.values[0:1:1]}
	x.fields[1] = passthrough.Field{Name: "Cache-Status", Values: x.values[1:2:2]}
	extra := x.fields[:2]
	if e.contentLength != nil {
		extra = append(extra, passthrough.Field{Name: "Content-Length", Values: e.contentLength})
	}
	s := passthrough.Stored{Status: e.status, Fields: e.fields, Wire: e.wire, Extra: extra}
	if r.Method != http.MethodHead && !e.headOnly {
		s.Body = e.body
	}
	sw.WriteStored(s)
}
