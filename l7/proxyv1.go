package l7

import (
	"bytes"
	"io"
	"net"
)

// maxV1HeaderLen is the longest PROXY protocol v1 line, CRLF included: the
// worst case the PROXY protocol specification gives for version 1.
const maxV1HeaderLen = 107

// v1Prefix is the v1 signature that go-proxyproto v0.15.0 dispatches on.
var v1Prefix = []byte("PROXY")

// v1GatherConn collects a PROXY v1 line that arrives in several TCP
// segments and returns it from a single Read. go-proxyproto v0.15.0
// rejects a v1 line that is not in its buffer after one read, but the
// specification recommends that receivers accept a header sent in pieces.
//
// Only the first Read gathers, and it stops as soon as the bytes cannot
// start a v1 line, so a v2 header, TLS or plain HTTP passes through after
// one read. It reads at most [maxV1HeaderLen] bytes, so it never takes
// request bytes that go-proxyproto would not also buffer. It runs under
// the read deadline go-proxyproto sets for the header, so the header
// timeout bounds how long a slow sender can hold it.
type v1GatherConn struct {
	net.Conn
	gathered bool
}

func (c *v1GatherConn) Read(p []byte) (int, error) {
	if c.gathered || len(p) == 0 {
		return c.Conn.Read(p)
	}
	c.gathered = true

	limit := min(len(p), maxV1HeaderLen)
	n := 0
	for {
		m, err := c.Conn.Read(p[n:limit])
		n += m
		if err != nil || n == limit || !partialV1Header(p[:n]) {
			// Bytes read before an error are returned with it, so the
			// parser sees what arrived and reports the error itself.
			return n, err
		}
	}
}

// ReadFrom passes writes to the TCP connection's ReadFrom, so that
// responses can still use sendfile or splice.
func (c *v1GatherConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.Conn, r)
}

// partialV1Header reports whether b is the start of a v1 line whose end
// has not arrived yet.
func partialV1Header(b []byte) bool {
	if len(b) < len(v1Prefix) {
		return bytes.HasPrefix(v1Prefix, b)
	}
	return bytes.HasPrefix(b, v1Prefix) && bytes.IndexByte(b, '\n') < 0
}
