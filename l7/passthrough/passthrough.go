// Package passthrough lets route middlewares tell the L7 fast path which
// requests they would hand to the next handler unchanged.
//
// The fast path forwards plain HTTP/1.1 requests without net/http, so it
// cannot run a middleware's ServeHTTP. It walks a route's handler chain
// instead: a handler that implements [Handler] and reports ok for the
// request is skipped, with the response-head edit it returns applied to the
// backend's response. A handler that does not implement it sends the
// request to net/http.
package passthrough

import "net/http"

// Request is the part of a request a [Handler] reads to decide.
type Request struct {
	// Listener is the name of the listener that received the request.
	Listener string
	// Method is the request method.
	Method string
	// Values returns the values of the request header field with the
	// given canonical name.
	Values func(name string) []string
}

// Head is a response head being relayed. [http.Header] implements it.
type Head interface {
	Get(name string) string
	Values(name string) []string
	Add(name, value string)
}

// Handler is implemented by middleware handlers that can tell from a
// request alone that they would pass it to next unchanged. edit, when not
// nil, makes the changes the handler would make to the response head, and
// must not depend on the body.
type Handler interface {
	PassThrough(r *Request) (next http.Handler, edit func(status int, h Head), ok bool)
}

// Responder is implemented by middleware handlers that can serve some
// requests without the handlers after them, such as a cache on a fresh hit.
// RespondFast writes the whole response to w and returns true, or returns
// false without touching w or r. r has no body, and w supports Header,
// WriteHeader and Write only.
type Responder interface {
	RespondFast(w http.ResponseWriter, r *http.Request) bool
}

// Field is a response field name, in canonical form, with its values.
type Field struct {
	Name   string
	Values []string
}

// Stored is a whole response that a [Responder] keeps in memory with its
// head already in wire form, such as a cache entry.
type Stored struct {
	// Status is a status that allows a body: 200 to 599 except 204 and 304.
	Status int
	// Fields are the stored fields, one per name. They and their values
	// are shared and must not be changed.
	Fields []Field
	// Wire is Fields written as "Name: value\r\n" lines. No value in it
	// contains a CR or LF.
	Wire []byte
	// Extra are the fields of this response only, written after Wire. A
	// name may be in both, because a field line may repeat.
	Extra []Field
	// Body is the body, left out for a HEAD request.
	Body []byte
}

// StoredWriter is implemented by the fast path's ResponseWriter. A
// [Responder] may call WriteStored instead of WriteHeader and Write, and
// then writes nothing more. Fields set through Header before the call are
// sent too, unless s.Fields has the same name.
type StoredWriter interface {
	WriteStored(s Stored)
}
