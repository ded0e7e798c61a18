package inspect

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// benchLimits are roomy limits, so the benchmarks measure scanning and
// not rejections.
var benchLimits = Limits{MaxRequestLine: 8 << 10, MaxURILength: 8 << 10, MaxHeaderBytes: 64 << 10, MaxHeaderCount: 100}

// benchHeadGet is a typical browser-like GET with 6 header fields, about
// 200 bytes.
const benchHeadGet = "GET /api/v1/items/7?fields=name,qty HTTP/1.1\r\n" +
	"Host: shop.example\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n" +
	"Accept: application/json\r\n" +
	"Accept-Encoding: gzip, br\r\n" +
	"Cookie: session=4f2a9c\r\n" +
	"Connection: keep-alive\r\n" +
	"\r\n"

// benchHead40 returns a GET head with 40 header fields.
func benchHead40() string {
	var sb strings.Builder
	sb.WriteString("GET /search?q=tidegate&page=2 HTTP/1.1\r\nHost: shop.example\r\n")
	for i := range 39 {
		fmt.Fprintf(&sb, "X-Field-%02d: value-%02d-abcdefghijklmnop\r\n", i, i)
	}
	sb.WriteString("\r\n")
	return sb.String()
}

// feedAll feeds every part to f, drops the output and fails on a rejection.
func feedAll(b *testing.B, f *framer, parts [][]byte) {
	for _, p := range parts {
		if rej := f.feed(p); rej != nil {
			b.Fatalf("feed(%q) = %+v", p, rej)
		}
	}
	f.out = f.out[:0]
}

func BenchmarkFramerHeadOneRead(b *testing.B) {
	head := []byte(benchHeadGet)
	f := newFramer(benchLimits)
	b.SetBytes(int64(len(head)))
	b.ReportAllocs()
	for b.Loop() {
		feedAll(b, f, [][]byte{head})
	}
}

// BenchmarkFramerHeadSplitReads feeds the 6-field head in four reads, cut
// inside the request line, inside a field value, inside a field name and
// between the CR and the LF of the blank line.
func BenchmarkFramerHeadSplitReads(b *testing.B) {
	head := []byte(benchHeadGet)
	cuts := []int{20, 90, 150, len(head) - 1}
	parts := make([][]byte, 0, len(cuts)+1)
	prev := 0
	for _, c := range cuts {
		parts = append(parts, head[prev:c])
		prev = c
	}
	parts = append(parts, head[prev:])
	f := newFramer(benchLimits)
	b.SetBytes(int64(len(head)))
	b.ReportAllocs()
	for b.Loop() {
		feedAll(b, f, parts)
	}
}

func BenchmarkFramerHead40Fields(b *testing.B) {
	head := []byte(benchHead40())
	f := newFramer(benchLimits)
	b.SetBytes(int64(len(head)))
	b.ReportAllocs()
	for b.Loop() {
		feedAll(b, f, [][]byte{head})
	}
}

// replayConn is a net.Conn whose every Read returns one copy of data, as
// a keep-alive client sending the same request would.
type replayConn struct {
	net.Conn // nil: only the methods below are called
	data     []byte
}

func (c *replayConn) Read(b []byte) (int, error)         { return copy(b, c.data), nil }
func (c *replayConn) SetReadDeadline(time.Time) error    { return nil }
func (c *replayConn) RemoteAddr() net.Addr               { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (c *replayConn) Write(b []byte) (int, error)        { return len(b), nil }
func (c *replayConn) SetWriteDeadline(t time.Time) error { return nil }

// BenchmarkFramerWrapConn reads the 6-field head through [Conn.Read] with
// a 4KiB buffer, the size of net/http's read buffer.
func BenchmarkFramerWrapConn(b *testing.B) {
	head := []byte(benchHeadGet)
	c := WrapConn(&replayConn{data: head}, benchLimits, nil)
	buf := make([]byte, 4096)
	b.SetBytes(int64(len(head)))
	b.ReportAllocs()
	for b.Loop() {
		n, err := io.ReadAtLeast(c, buf, len(head))
		if err != nil || n != len(head) {
			b.Fatalf("Read = %d, %v, want %d bytes", n, err, len(head))
		}
	}
}
