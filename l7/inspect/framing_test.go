package inspect

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// benchLimits are far above the benchmark heads, so the benchmarks
// measure scanning and not rejections.
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

// BenchmarkFramerHeadSplitReads feeds the 6-field head in five reads, cut
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
	net.Conn // nil, because the wrapper calls only the methods below
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

// equivalenceLimits are the limit sets the reference comparison runs
// with: tight ones that heads cross mid-line, the fuzz limits of
// FuzzFramer, defaults, and limits far from any input.
var equivalenceLimits = []Limits{
	{MaxRequestLine: 16, MaxURILength: 8, MaxHeaderBytes: 40, MaxHeaderCount: 3, MaxBodyBytes: 20},
	{MaxRequestLine: 64, MaxURILength: 32, MaxHeaderBytes: 256, MaxHeaderCount: 8, MaxBodyBytes: 128},
	{},
	benchLimits,
}

// equivalenceSeeds are request streams that reach every head rule, with
// line ends and limits placed where a split read can cut them.
var equivalenceSeeds = []string{
	"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	benchHeadGet + benchHeadGet,
	"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\rhello\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nT: v\nX: y\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
	"GET / HTTP/1.1\nHost: a\n\n",
	"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n",
	"\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"\r\rGET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX : a\r\nY(: b\r\nZ: \x01\r\n\r\n",
	"GET /0123456789abcdef HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /0123456\r HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /0123 HTTP/1.1\r\nHost: a\r\nX-Long: 0123456789012345678901234\r\n\r\n",
	"GET /0123 HTTP/1.1\r\nHost: a\r\nX-Long: 01234567890123456\r\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",
	"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04",
	"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n\x00\x01GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
	// Under the first limit set, the byte that crosses MaxRequestLine or
	// MaxHeaderBytes is also a bare LF or the byte after a bare CR.
	"GET /0123456789abc\nHost: a\r\n\r\n",
	"GET /0123456789ab\rX HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("v", 28) + "\nY: z\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("v", 27) + "\rZ\r\n\r\n",
}

// framerRun is the outcome of feeding a stream of reads to a framer, with
// the state and rejection after every read and the bytes released.
type framerRun struct {
	steps []string
	out   []byte
}

// runFramer feeds parts to a new framer, through the reference methods
// when ref is set, and stops at the first rejection. After every second
// read it resumes a waiting upgrade, accepted or declined by the next bit
// of accepts, so the reads in between are held as backlog.
func runFramer(lim Limits, parts [][]byte, accepts uint64, ref bool) framerRun {
	f := newFramer(lim)
	var run framerRun
	for i, p := range parts {
		var rej *Rejection
		if ref {
			rej = f.refFeed(p)
		} else {
			rej = f.feed(p)
		}
		if rej == nil && f.state == stateAwaitUpgrade && i%2 == 1 {
			accepted := accepts&1 == 1
			accepts >>= 1
			if ref {
				rej = f.refResumeAfterUpgrade(accepted)
			} else {
				rej = f.resumeAfterUpgrade(accepted)
			}
		}
		run.steps = append(run.steps, describeFramer(f, rej))
		if rej != nil {
			break
		}
	}
	run.out = f.out
	return run
}

// describeFramer formats the observable state of f after a read. The line
// buffer and CR flag are left out after a rejection, because the framer
// takes no more input then and the old scan filled them differently.
func describeFramer(f *framer, rej *Rejection) string {
	s := fmt.Sprintf("state=%d inHead=%v inBody=%v headBytes=%d headerBytes=%d headerCount=%d delivered=%d lastUpgrade=%v",
		f.state, f.inHead(), f.inBody(), f.headBytes, f.headerBytes, f.headerCount, f.delivered, f.lastUpgrade)
	if rej != nil {
		return s + fmt.Sprintf(" rejected=%s/%d", rej.Reason, rej.Status)
	}
	return s + fmt.Sprintf(" held=%q line=%q prevCR=%v", f.held, f.line, f.prevCR)
}

// splitAt cuts data at the given offsets, which must be ascending.
func splitAt(data []byte, cuts ...int) [][]byte {
	parts := make([][]byte, 0, len(cuts)+1)
	prev := 0
	for _, c := range cuts {
		parts = append(parts, data[prev:c])
		prev = c
	}
	return append(parts, data[prev:])
}

// compareWithReference fails t when the line scan and the reference give
// different runs for parts, or different results from one feedHead call
// on the whole stream.
func compareWithReference(t *testing.T, lim Limits, data []byte, parts [][]byte, accepts uint64) {
	t.Helper()
	got := runFramer(lim, parts, accepts, false)
	want := runFramer(lim, parts, accepts, true)
	if len(got.steps) != len(want.steps) {
		t.Fatalf("limits %+v, reads %q: %d reads ran, reference ran %d", lim, parts, len(got.steps), len(want.steps))
	}
	for i := range got.steps {
		if got.steps[i] != want.steps[i] {
			t.Fatalf("limits %+v, reads %q: after read %d\n got %s\nwant %s", lim, parts, i, got.steps[i], want.steps[i])
		}
	}
	if !bytes.Equal(got.out, want.out) {
		t.Fatalf("limits %+v, reads %q: released %q, reference released %q", lim, parts, got.out, want.out)
	}

	if len(data) == 0 {
		return
	}
	f, g := newFramer(lim), newFramer(lim)
	n, rej := f.feedHead(data)
	refN, refRej := g.refFeedHead(data)
	if n != refN || describeFramer(f, rej) != describeFramer(g, refRej) {
		t.Fatalf("limits %+v: feedHead(%q) = %d, %s\nreference %d, %s", lim, data, n, describeFramer(f, rej), refN, describeFramer(g, refRej))
	}
}

// TestFramerMatchesReference cuts every seed at each single offset, and
// the shorter seeds at each pair of offsets, and compares the line scan
// with the byte-at-a-time reference under every limit set.
func TestFramerMatchesReference(t *testing.T) {
	for _, seed := range equivalenceSeeds {
		data := []byte(seed)
		for _, lim := range equivalenceLimits {
			compareWithReference(t, lim, data, [][]byte{data}, 0)
			for i := range len(data) + 1 {
				compareWithReference(t, lim, data, splitAt(data, i), 1)
			}
			if len(data) > 80 || testing.Short() {
				continue
			}
			for i := range len(data) + 1 {
				for j := i; j <= len(data); j++ {
					compareWithReference(t, lim, data, splitAt(data, i, j), uint64(i+j))
				}
			}
		}
	}
}

// FuzzFramerEquivalence feeds random streams, cut into random reads, to
// the line scan and to the byte-at-a-time reference, and requires the
// same rejection, state after every read and released bytes.
func FuzzFramerEquivalence(f *testing.F) {
	for i, s := range equivalenceSeeds {
		f.Add([]byte(s), uint64(i)*0x9e3779b97f4a7c15, uint8(i))
	}
	f.Fuzz(func(t *testing.T, data []byte, cutSeed uint64, limitChoice uint8) {
		lim := equivalenceLimits[int(limitChoice)%len(equivalenceLimits)]
		rng := rand.New(rand.NewPCG(cutSeed, uint64(len(data))))
		var cuts []int
		if len(data) > 0 {
			for range rng.IntN(8) {
				cuts = append(cuts, rng.IntN(len(data)+1))
			}
		}
		slices.Sort(cuts)
		compareWithReference(t, lim, data, splitAt(data, cuts...), rng.Uint64())
	})
}
