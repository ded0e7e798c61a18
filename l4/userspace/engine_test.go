package userspace

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tidegate/tidegate/l4/proxyheader"
)

// staticPicker returns the same reals for every connection.
type staticPicker []string

func (p staticPicker) Pick(_, _ netip.AddrPort, n int) []string {
	if len(p) == 0 {
		return nil
	}
	return p[:min(n, len(p))]
}

// realConn is what a test real saw on one connection.
type realConn struct {
	header *proxyproto.Header
	conn   net.Conn
	r      *bufio.Reader
}

// startReal runs a loopback TCP server that parses the PROXY header of each
// connection and hands the connection to handle.
func startReal(t *testing.T, handle func(rc *realConn)) (string, <-chan *proxyproto.Header) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	headers := make(chan *proxyproto.Header, 100)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				r := bufio.NewReader(c)
				h, err := proxyproto.Read(r)
				if err != nil {
					t.Errorf("real: read PROXY header: %v", err)
					return
				}
				_ = c.SetReadDeadline(time.Time{})
				headers <- h
				handle(&realConn{header: h, conn: c, r: r})
			}()
		}
	}()
	return ln.Addr().String(), headers
}

func echo(rc *realConn) {
	_, _ = io.Copy(rc.conn, rc.r)
	_ = rc.conn.(*net.TCPConn).CloseWrite()
}

func newTestEngine(t *testing.T) (*Engine, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	e, err := New(slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.Drain(ctx)
	})
	return e, reg
}

// serve starts the engine on one VIP and returns the VIP's bound address.
func serve(t *testing.T, e *Engine, v VIP) string {
	t.Helper()
	if v.Address == "" {
		v.Address = "127.0.0.1:0"
	}
	if v.Name == "" {
		v.Name = "test"
	}
	if v.ProxyVersion == 0 {
		v.ProxyVersion = 2
	}
	if v.ConnectTimeout == 0 {
		v.ConnectTimeout = time.Second
	}
	if v.DialAttempts == 0 {
		v.DialAttempts = 3
	}
	if err := e.Update([]VIP{v}); err != nil {
		t.Fatal(err)
	}
	return e.Addrs()[v.Address].String()
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn)
}

func TestEngineWritesProxyV2(t *testing.T) {
	e, reg := newTestEngine(t)
	real, headers := startReal(t, echo)
	vip := serve(t, e, VIP{Picker: staticPicker{real}})

	c := dial(t, vip)
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "hello" {
		t.Errorf("echo = %q, want %q", got, "hello")
	}

	h := <-headers
	if h.Version != 2 {
		t.Errorf("header version = %d, want 2", h.Version)
	}
	src, dst, ok := h.TCPAddrs()
	if !ok {
		t.Fatal("header has no TCP addresses")
	}
	if src.String() != c.LocalAddr().String() {
		t.Errorf("header source = %s, want the client %s", src, c.LocalAddr())
	}
	if dst.String() != vip {
		t.Errorf("header destination = %s, want the VIP %s", dst, vip)
	}
	if _, ok := proxyheader.UniqueID(h); !ok {
		t.Error("header has no UNIQUE_ID TLV")
	}

	waitFor(t, "connection metrics", func() bool {
		return testutil.ToFloat64(e.m.bytes.WithLabelValues("test", real, "client_to_real")) == 5 &&
			testutil.ToFloat64(e.m.bytes.WithLabelValues("test", real, "real_to_client")) == 5
	})
	if n := testutil.ToFloat64(e.m.realConns.WithLabelValues("test", real)); n != 1 {
		t.Errorf("real connections = %v, want 1", n)
	}
	if n, err := testutil.GatherAndCount(reg, "tidegate_l4_dial_duration_seconds"); err != nil || n != 1 {
		t.Errorf("dial histogram series = %d (%v), want 1", n, err)
	}
}

func TestEngineUniqueIDsDiffer(t *testing.T) {
	e, _ := newTestEngine(t)
	real, headers := startReal(t, echo)
	vip := serve(t, e, VIP{Picker: staticPicker{real}})
	seen := map[proxyheader.ID]bool{}
	for range 5 {
		c := dial(t, vip)
		_ = c.CloseWrite()
		_, _ = io.ReadAll(c)
		id, ok := proxyheader.UniqueID(<-headers)
		if !ok || seen[id] {
			t.Fatalf("unique ID %s (present %v) repeated or missing", id, ok)
		}
		seen[id] = true
	}
}

func TestEngineWritesProxyV1(t *testing.T) {
	e, _ := newTestEngine(t)
	real, headers := startReal(t, echo)
	vip := serve(t, e, VIP{ProxyVersion: 1, Picker: staticPicker{real}})
	c := dial(t, vip)
	_ = c.CloseWrite()
	_, _ = io.ReadAll(c)
	h := <-headers
	if h.Version != 1 {
		t.Fatalf("header version = %d, want 1", h.Version)
	}
	if src, _, _ := h.TCPAddrs(); src.String() != c.LocalAddr().String() {
		t.Errorf("v1 source = %s, want %s", src, c.LocalAddr())
	}
}

// TestEngineHalfClose checks that the real receives the client's FIN before
// it responds, and that the response still reaches the half-closed client.
func TestEngineHalfClose(t *testing.T) {
	e, _ := newTestEngine(t)
	real, _ := startReal(t, func(rc *realConn) {
		req, err := io.ReadAll(rc.r) // returns only after the client's FIN
		if err != nil {
			t.Errorf("real: read request: %v", err)
			return
		}
		_, _ = rc.conn.Write(append([]byte("got "), req...))
		_ = rc.conn.(*net.TCPConn).CloseWrite()
	})
	vip := serve(t, e, VIP{Picker: staticPicker{real}})

	c := dial(t, vip)
	if _, err := c.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read answer after half-close: %v", err)
	}
	if string(got) != "got request" {
		t.Errorf("answer = %q, want %q", got, "got request")
	}
}

// TestEngineServerHalfClose is the other order: the real finishes first and
// the client keeps sending afterwards.
func TestEngineServerHalfClose(t *testing.T) {
	e, _ := newTestEngine(t)
	real, _ := startReal(t, func(rc *realConn) {
		_, _ = rc.conn.Write([]byte("banner"))
		_ = rc.conn.(*net.TCPConn).CloseWrite()
		rest, _ := io.ReadAll(rc.r)
		if string(rest) != "after" {
			t.Errorf("real read %q after its FIN, want %q", rest, "after")
		}
	})
	vip := serve(t, e, VIP{Picker: staticPicker{real}})
	c := dial(t, vip)
	banner, err := io.ReadAll(c)
	if err != nil || string(banner) != "banner" {
		t.Fatalf("banner = %q, %v", banner, err)
	}
	if _, err := c.Write([]byte("after")); err != nil {
		t.Fatalf("write after the real's FIN: %v", err)
	}
	_ = c.CloseWrite()
}

func TestEngineDialFallback(t *testing.T) {
	e, _ := newTestEngine(t)
	real, _ := startReal(t, echo)
	dead := closedAddr(t)
	vip := serve(t, e, VIP{Picker: staticPicker{dead, real}})

	c := dial(t, vip)
	_, _ = c.Write([]byte("x"))
	_ = c.CloseWrite()
	if got, _ := io.ReadAll(c); string(got) != "x" {
		t.Fatalf("echo through the fallback real = %q, want %q", got, "x")
	}
	if n := testutil.ToFloat64(e.m.dialFailures.WithLabelValues("test", dead)); n != 1 {
		t.Errorf("dial failures of the dead real = %v, want 1", n)
	}
}

func TestEngineAllDialsFail(t *testing.T) {
	e, _ := newTestEngine(t)
	vip := serve(t, e, VIP{Picker: staticPicker{closedAddr(t), closedAddr(t)}})
	dialRejected(t, vip)
	waitFor(t, "dial_failed rejection", func() bool {
		return testutil.ToFloat64(e.m.rejected.WithLabelValues("test", rejectDialFailed)) == 1
	})
}

func TestEngineNoReal(t *testing.T) {
	e, _ := newTestEngine(t)
	vip := serve(t, e, VIP{Picker: staticPicker(nil)})
	dialRejected(t, vip)
	waitFor(t, "no_real rejection", func() bool {
		return testutil.ToFloat64(e.m.rejected.WithLabelValues("test", rejectNoReal)) == 1
	})
}

func TestEngineMaxConnections(t *testing.T) {
	e, _ := newTestEngine(t)
	real, headers := startReal(t, echo)
	vip := serve(t, e, VIP{MaxConnections: 1, Picker: staticPicker{real}})

	first := dial(t, vip)
	<-headers // the first connection reached the real

	dialRejected(t, vip)
	waitFor(t, "limit rejection", func() bool {
		return testutil.ToFloat64(e.m.rejected.WithLabelValues("test", rejectLimit)) == 1
	})

	// The first connection is unaffected.
	_, _ = first.Write([]byte("still here"))
	_ = first.CloseWrite()
	if got, _ := io.ReadAll(first); string(got) != "still here" {
		t.Errorf("first connection echo = %q", got)
	}

	// Once it closed, a new connection is accepted again.
	waitFor(t, "slot freed", func() bool {
		return testutil.ToFloat64(e.m.active.WithLabelValues("test")) == 0
	})
	third := dial(t, vip)
	_ = third.CloseWrite()
	if _, err := io.ReadAll(third); err != nil {
		t.Errorf("third connection: %v", err)
	}
	if n := testutil.ToFloat64(e.m.realConns.WithLabelValues("test", real)); n != 2 {
		t.Errorf("real connections = %v, want 2", n)
	}
}

func TestEngineIdleTimeout(t *testing.T) {
	e, _ := newTestEngine(t)
	closed := make(chan error, 1)
	real, _ := startReal(t, func(rc *realConn) {
		_, err := rc.r.ReadByte()
		closed <- err
	})
	vip := serve(t, e, VIP{IdleTimeout: 100 * time.Millisecond, Picker: staticPicker{real}})
	c := dial(t, vip)

	select {
	case err := <-closed:
		if err == nil {
			t.Fatal("real read a byte the client never sent")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("idle connection was not closed")
	}
	if _, err := io.ReadAll(c); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Logf("client read after idle close: %v", err)
	}
}

// TestEngineIdleKeepsActive sends a byte every 20ms from the client only,
// for twice the idle timeout. The real answers once at the end, so the
// real-to-client direction is silent throughout, and the connection must
// still stay open.
func TestEngineIdleKeepsActive(t *testing.T) {
	const idle, bytesSent = 400 * time.Millisecond, 40
	e, _ := newTestEngine(t)
	real, _ := startReal(t, func(rc *realConn) {
		if _, err := io.ReadFull(rc.r, make([]byte, bytesSent)); err != nil {
			return
		}
		_, _ = rc.conn.Write([]byte("ok"))
	})
	vip := serve(t, e, VIP{IdleTimeout: idle, Picker: staticPicker{real}})
	c := dial(t, vip)

	start := time.Now()
	for i := range bytesSent {
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatalf("write %d: %v (closed while active)", i, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if elapsed := time.Since(start); elapsed < idle {
		t.Fatalf("sending took %s, less than the idle timeout, so the test proves nothing", elapsed)
	}
	got := make([]byte, 2)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "ok" {
		t.Fatalf("reply = %q, %v; want %q (closed while one direction was active)", got, err, "ok")
	}
}

func TestEngineUpdateKeepsConnections(t *testing.T) {
	e, _ := newTestEngine(t)
	real, headers := startReal(t, echo)
	vip := serve(t, e, VIP{Name: "a", Picker: staticPicker{real}})
	c := dial(t, vip)
	<-headers

	// Drop the VIP: its listener closes, its open connection runs on.
	if err := e.Update(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", vip, time.Second); err == nil {
		t.Error("removed VIP still accepts connections")
	}
	_, _ = c.Write([]byte("kept"))
	_ = c.CloseWrite()
	if got, _ := io.ReadAll(c); string(got) != "kept" {
		t.Errorf("open connection after its VIP was removed: echo = %q, want %q", got, "kept")
	}
}

func TestEnginePrepareAllOrNothing(t *testing.T) {
	e, _ := newTestEngine(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	free := closedAddr(t)
	if err := e.Prepare([]string{free, busy.Addr().String()}); err == nil {
		t.Fatal("Prepare with a busy address succeeded")
	}
	ln, err := net.Listen("tcp", free)
	if err != nil {
		t.Fatalf("Prepare left %s bound after failing: %v", free, err)
	}
	ln.Close()
}

func TestEngineDrainClosesAfterTimeout(t *testing.T) {
	e, _ := newTestEngine(t)
	real, headers := startReal(t, echo)
	// The check at the end dials the VIP's port after Drain released it.
	// Listeners of other tests and processes bind 127.0.0.1, so a loopback
	// address of its own keeps them from taking the port in between.
	vip := serve(t, e, VIP{Address: privateLoopback(t), Picker: staticPicker{real}})
	c := dial(t, vip)
	<-headers

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := e.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Drain with an open connection = %v, want DeadlineExceeded", err)
	}
	if _, err := io.ReadAll(c); err != nil && !isReset(err) {
		t.Errorf("client read after forced drain: %v", err)
	}
	if _, err := net.DialTimeout("tcp", vip, time.Second); err == nil {
		t.Error("drained engine still accepts connections")
	}
}

func TestEngineDrainWaits(t *testing.T) {
	e, _ := newTestEngine(t)
	real, headers := startReal(t, echo)
	vip := serve(t, e, VIP{Picker: staticPicker{real}})
	c := dial(t, vip)
	<-headers

	done := make(chan error, 1)
	go func() { done <- e.Drain(context.Background()) }()
	select {
	case err := <-done:
		t.Fatalf("Drain returned %v with a connection open", err)
	case <-time.After(100 * time.Millisecond):
	}
	_, _ = c.Write([]byte("bye"))
	_ = c.CloseWrite()
	if got, _ := io.ReadAll(c); string(got) != "bye" {
		t.Errorf("echo during drain = %q", got)
	}
	if err := <-done; err != nil {
		t.Errorf("Drain = %v after the last connection closed", err)
	}
}

// TestEngineLargeTransfer moves 8 MiB each way at once and compares bytes.
func TestEngineLargeTransfer(t *testing.T) {
	e, _ := newTestEngine(t)
	real, _ := startReal(t, echo)
	vip := serve(t, e, VIP{Picker: staticPicker{real}})
	c := dial(t, vip)

	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(i * 7 / 3)
	}
	go func() {
		_, _ = c.Write(data)
		_ = c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("echoed %d bytes differ from the %d sent", len(got), len(data))
	}
}

// dialRejected connects to a VIP that is expected to reset the connection
// at once, and checks that no byte arrives. The reset can already fail the
// connect, which is fine.
func dialRejected(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if got, _ := io.ReadAll(c); len(got) > 0 {
		t.Errorf("rejected connection received %q", got)
	}
}

func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// privateLoopback returns "127.A.B.C:0" with a random address in
// 127.0.0.0/8 outside 127.0.0.0/16, which Linux routes to the loopback
// interface.
func privateLoopback(t *testing.T) string {
	t.Helper()
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.%d.%d.%d:0", 1+b[0]%254, b[1], 1+b[2]%254)
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLogLimiter(t *testing.T) {
	var l logLimiter
	if ok, _ := l.allow(); !ok {
		t.Fatal("first line suppressed")
	}
	for range 5 {
		if ok, _ := l.allow(); ok {
			t.Fatal("line within a second allowed")
		}
	}
	l.next.Store(time.Now().UnixNano() - 1)
	ok, skipped := l.allow()
	if !ok || skipped != 5 {
		t.Errorf("allow after a second = %v, %d suppressed; want true, 5", ok, skipped)
	}
}

// benchEngine starts an engine with one VIP in front of a loopback real
// that reads the PROXY header and then runs handle, and returns the VIP.
func benchEngine(b *testing.B, handle func(c net.Conn, r *bufio.Reader)) string {
	b.Helper()
	e, err := New(slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.Drain(context.Background()) })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				if _, err := proxyproto.Read(r); err != nil {
					return
				}
				handle(c, r)
			}()
		}
	}()

	v := VIP{Name: "bench", Address: "127.0.0.1:0", ProxyVersion: 2, ConnectTimeout: time.Second,
		IdleTimeout: time.Minute, DialAttempts: 1, Picker: staticPicker{ln.Addr().String()}}
	if err := e.Update([]VIP{v}); err != nil {
		b.Fatal(err)
	}
	return e.Addrs()["127.0.0.1:0"].String()
}

// BenchmarkConnect measures one connection through the engine on loopback:
// accept, pick, dial, PROXY header, one echoed byte and both FINs.
func BenchmarkConnect(b *testing.B) {
	vip := benchEngine(b, func(c net.Conn, r *bufio.Reader) { _, _ = io.Copy(c, r) })
	buf := make([]byte, 1)

	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("tcp", vip)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = c.Write([]byte{1})
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkThroughput measures one-way bulk copy through the engine on
// loopback: the client uploads 64 MiB per iteration and the real discards.
func BenchmarkThroughput(b *testing.B) {
	const size = 64 << 20
	vip := benchEngine(b, func(c net.Conn, r *bufio.Reader) {
		n, _ := io.Copy(io.Discard, r)
		_, _ = fmt.Fprintf(c, "%d", n)
	})
	chunk := make([]byte, 1<<20)

	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("tcp", vip)
		if err != nil {
			b.Fatal(err)
		}
		for range size / len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				b.Fatal(err)
			}
		}
		_ = c.(*net.TCPConn).CloseWrite()

		got, _ := io.ReadAll(c)
		if string(got) != fmt.Sprint(size) {
			b.Fatalf("real counted %q bytes, want %d", got, size)
		}
		c.Close()
	}
}

// TestEngineIdleStuckReader covers a client that half-closes and then never
// reads while the real keeps sending: once buffers fill, no byte moves, and
// the connection must still be closed.
func TestEngineIdleStuckReader(t *testing.T) {
	e, _ := newTestEngine(t)
	writeErr := make(chan error, 1)
	real, _ := startReal(t, func(rc *realConn) {
		buf := make([]byte, 64<<10)
		for {
			_ = rc.conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
			if _, err := rc.conn.Write(buf); err != nil {
				writeErr <- err
				return
			}
		}
	})
	vip := serve(t, e, VIP{IdleTimeout: 300 * time.Millisecond, Picker: staticPicker{real}})
	c := dial(t, vip)
	_ = c.SetReadBuffer(4 << 10)
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}

	select {
	case err := <-writeErr:
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("real's write timed out in the test itself; the L4 never closed the stuck connection")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("connection to a client that stopped reading was not closed")
	}
	waitFor(t, "connection gone from the active gauge", func() bool {
		return testutil.ToFloat64(e.m.active.WithLabelValues("test")) == 0
	})
}

// stalledAddr returns a loopback address whose accept queue is full, so the
// kernel drops new SYNs and a connect to it hangs until the dialer's timeout.
func stalledAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)

	// Nothing accepts, so a few connections fill the queue.
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Skip("accept queue did not fill; cannot make a connect hang on loopback")
	return ""
}

func TestEngineConnectTimeoutFallsBack(t *testing.T) {
	e, _ := newTestEngine(t)
	stalled := stalledAddr(t)
	real, _ := startReal(t, echo)
	vip := serve(t, e, VIP{ConnectTimeout: 200 * time.Millisecond, Picker: staticPicker{stalled, real}})

	c := dial(t, vip)
	_, _ = c.Write([]byte("x"))
	_ = c.CloseWrite()
	if got, _ := io.ReadAll(c); string(got) != "x" {
		t.Fatalf("echo after the first real timed out = %q, want %q", got, "x")
	}
	if n := testutil.ToFloat64(e.m.dialFailures.WithLabelValues("test", stalled)); n != 1 {
		t.Errorf("dial failures of the stalled real = %v, want 1", n)
	}
}

// setupWorkers counts the goroutines running setupWorker, and those of
// them that wait in its select for the next connection.
func setupWorkers() (all, waiting int) {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	for n == len(buf) {
		buf = make([]byte, 2*len(buf))
		n = runtime.Stack(buf, true)
	}
	for _, g := range strings.Split(string(buf[:n]), "\n\n") {
		if !strings.Contains(g, "userspace.(*Engine).setupWorker(") {
			continue
		}
		all++
		if strings.Contains(g, " [select") {
			waiting++
		}
	}
	return all, waiting
}

// TestSetupWorkerReusedAndDrained opens connections one after another: one
// setup worker serves them all, and Drain ends it.
func TestSetupWorkerReusedAndDrained(t *testing.T) {
	e, _ := newTestEngine(t)
	real, _ := startReal(t, echo)
	vip := serve(t, e, VIP{Picker: staticPicker{real}})
	// Earlier tests drained their engines, but their workers may not have
	// run yet to see it. Counting them would break the counts below when
	// they exit.
	waitFor(t, "setup workers of earlier tests to exit", func() bool {
		all, _ := setupWorkers()
		return all == 0
	})
	const before, waitingBefore = 0, 0

	for i := range 5 {
		c := dial(t, vip)
		msg := fmt.Sprintf("conn %d", i)
		_, _ = c.Write([]byte(msg))
		_ = c.CloseWrite()
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("connection %d: read echo: %v", i, err)
		}
		if string(got) != msg {
			t.Fatalf("connection %d: echo %q, want %q", i, got, msg)
		}
		// The next connection finds the worker only once it waits again.
		waitFor(t, "setup worker waiting", func() bool {
			_, waiting := setupWorkers()
			return waiting == waitingBefore+1
		})
	}
	if all, _ := setupWorkers(); all != before+1 {
		t.Errorf("setup workers after 5 connections in a row = %d, want %d", all, before+1)
	}
	if n := testutil.ToFloat64(e.m.accepted.WithLabelValues("test")); n != 5 {
		t.Errorf("accepted = %v, want 5", n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	waitFor(t, "setup workers to exit", func() bool {
		all, _ := setupWorkers()
		return all == before
	})
}

// TestEngineRealHostName dials a real given by host name, which goes
// through the resolver rather than the IP literal path.
func TestEngineRealHostName(t *testing.T) {
	e, _ := newTestEngine(t)
	real, _ := startReal(t, echo)
	_, port, err := net.SplitHostPort(real)
	if err != nil {
		t.Fatal(err)
	}
	named := net.JoinHostPort("localhost", port)
	if addrs, err := net.LookupHost("localhost"); err != nil || !slices.Contains(addrs, "127.0.0.1") {
		t.Skipf("localhost does not resolve to 127.0.0.1 here (%v, %v)", addrs, err)
	}
	vip := serve(t, e, VIP{Picker: staticPicker{named}})

	c := dial(t, vip)
	_, _ = c.Write([]byte("by name"))
	_ = c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if string(got) != "by name" {
		t.Fatalf("echo through a named real = %q, want %q", got, "by name")
	}
}
