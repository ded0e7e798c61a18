//go:build linux

package userspace

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"
)

// manyConnectTimeout is the dial timeout of VIPs in tests that open many
// flows at once. With the race detector on a loaded machine, a dial can
// take longer than serve's 1 s default, and the engine then closes a
// connection the real already accepted.
const manyConnectTimeout = 10 * time.Second

// fdCounts is the number of open descriptors of this process by kind.
type fdCounts struct {
	sockets, pipes int
}

// settleFDs runs the garbage collector and waits until the pipe count
// stops falling, so pipes that Go's own splice pool still keeps for
// earlier tests are closed before a test takes its baseline.
func settleFDs(t *testing.T) fdCounts {
	t.Helper()
	runtime.GC()
	runtime.GC()
	last := countFDs(t)
	for range 50 {
		time.Sleep(10 * time.Millisecond)
		now := countFDs(t)
		if now.pipes == last.pipes {
			return now
		}
		last = now
	}
	return last
}

// countFDs reads /proc/self/fd. Descriptors that close while it runs are
// skipped.
func countFDs(t *testing.T) fdCounts {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("list /proc/self/fd: %v", err)
	}
	var c fdCounts
	for _, e := range entries {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(target, "socket:"):
			c.sockets++
		case strings.HasPrefix(target, "pipe:"):
			c.pipes++
		}
	}
	return c
}

// plainEcho sends back what it reads with read and write calls. io.Copy
// between two *net.TCPConn would splice, and Go's splice keeps a pipe
// while it waits, which would be counted as the engine's.
func plainEcho(rc *realConn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := rc.r.Read(buf)
		if n > 0 {
			if _, werr := rc.conn.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			_ = rc.conn.(*net.TCPConn).CloseWrite()
			return
		}
	}
}

// startManyReal is startReal for tests with more connections than its
// header channel holds: it discards the headers.
func startManyReal(t *testing.T, handle func(rc *realConn)) string {
	t.Helper()
	addr, headers := startReal(t, handle)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go func() {
		for {
			select {
			case <-headers:
			case <-stop:
				return
			}
		}
	}()
	return addr
}

// exchange writes msg on c and reads it back from the echoing real.
func exchange(t *testing.T, c *net.TCPConn, msg []byte) {
	t.Helper()
	if err := tryExchange(c, msg); err != nil {
		t.Fatal(err)
	}
}

// tryExchange is exchange for goroutines other than the test's.
func tryExchange(c *net.TCPConn, msg []byte) error {
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		errc <- err
	}()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read echo of %d bytes: %w", len(msg), err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("write %d bytes: %w", len(msg), err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo of %d bytes differs from what was sent", len(msg))
	}
	return nil
}

// openIdleFlows opens n connections through the engine, moves msg each way
// on every one, and leaves them open and idle.
func openIdleFlows(t *testing.T, vip string, n int, msg []byte) []*net.TCPConn {
	t.Helper()
	conns := make([]*net.TCPConn, n)
	for i := range conns {
		conns[i] = dial(t, vip)
		_ = conns[i].SetDeadline(time.Now().Add(30 * time.Second))
		exchange(t, conns[i], msg)
	}
	return conns
}

// checkIdleFDs waits until the descriptors opened since before match n idle
// flows: four sockets each (the test's client and real ends and the
// engine's two), and no pipe beyond those the engine's pool may keep.
func checkIdleFDs(t *testing.T, before fdCounts, n int) {
	t.Helper()
	var now fdCounts
	deadline := time.Now().Add(5 * time.Second)
	for {
		now = countFDs(t)
		if now.sockets-before.sockets <= 4*n && now.pipes-before.pipes <= 2*maxIdlePipes {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("%d idle flows hold %d sockets and %d pipe descriptors, want at most %d sockets (4 per flow) and %d pipe descriptors (the idle pool)",
		n, now.sockets-before.sockets, now.pipes-before.pipes, 4*n, 2*maxIdlePipes)
}

func TestIdleFlowsHoldNoPipes(t *testing.T) {
	const flows = 200
	e, _ := newTestEngine(t)
	real := startManyReal(t, plainEcho)
	vip := serve(t, e, VIP{IdleTimeout: time.Minute, ConnectTimeout: manyConnectTimeout, Picker: staticPicker{real}})

	before := settleFDs(t)
	openIdleFlows(t, vip, flows, []byte("hello"))
	checkIdleFDs(t, before, flows)
}

// TestIdleAfterBulkHoldsNoPipes moves enough bytes each way to make the
// engine splice, then leaves the flows idle: the pipes must go back to
// the pool, which keeps at most maxIdlePipes of them.
func TestIdleAfterBulkHoldsNoPipes(t *testing.T) {
	const flows = 3 * maxIdlePipes
	e, _ := newTestEngine(t)
	real := startManyReal(t, plainEcho)
	vip := serve(t, e, VIP{IdleTimeout: time.Minute, ConnectTimeout: manyConnectTimeout, Picker: staticPicker{real}})

	before := settleFDs(t)
	conns := make([]*net.TCPConn, flows)
	for i := range conns {
		conns[i] = dial(t, vip)
	}
	// All flows carry data at once, so many pipes are in use together.
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			if err := tryExchange(c, testPayload(1<<20)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	checkIdleFDs(t, before, flows)

	// The flows still work after they gave their pipes back.
	for _, c := range conns[:4] {
		exchange(t, c, testPayload(256<<10))
	}
}

func TestIdlePoolClosedByDrain(t *testing.T) {
	e, _ := newTestEngine(t)
	real, _ := startReal(t, plainEcho)
	vip := serve(t, e, VIP{Picker: staticPicker{real}})

	before := settleFDs(t)
	c := dial(t, vip)
	exchange(t, c, testPayload(1<<20))
	_ = c.CloseWrite()
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("read to EOF: %v", err)
	}
	c.Close()
	if err := e.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "pipes closed after Drain", func() bool {
		return countFDs(t).pipes <= before.pipes
	})
}

// TestResetMidTransferLeaksNothing resets one side of each flow while the
// engine has bytes in flight towards it: the client while the real sends
// 8 MiB, and the real while the client uploads. Afterwards no socket or
// pipe of those flows may stay open.
func TestResetMidTransferLeaksNothing(t *testing.T) {
	const flows = 2 * maxIdlePipes
	tests := []struct {
		name   string
		handle func(rc *realConn)
		client func(t *testing.T, c *net.TCPConn)
	}{
		{
			name: "client resets",
			handle: func(rc *realConn) {
				_ = rc.conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
				_, _ = rc.conn.Write(testPayload(8 << 20))
			},
			client: func(t *testing.T, c *net.TCPConn) {
				// Read a little, so the engine is mid-transfer with
				// full buffers, then reset.
				if _, err := io.ReadFull(c, make([]byte, 64<<10)); err != nil {
					t.Errorf("read start of download: %v", err)
				}
				_ = c.SetLinger(0)
				c.Close()
			},
		},
		{
			name: "real resets",
			handle: func(rc *realConn) {
				if _, err := io.ReadFull(rc.r, make([]byte, 64<<10)); err != nil {
					t.Errorf("real: read start of upload: %v", err)
				}
				_ = rc.conn.(*net.TCPConn).SetLinger(0)
			},
			client: func(t *testing.T, c *net.TCPConn) {
				// Socket buffers on loopback can take several MiB,
				// so keep writing until the reset arrives.
				chunk := testPayload(1 << 20)
				for range 256 {
					if _, err := c.Write(chunk); err != nil {
						return
					}
				}
				t.Error("256 MiB upload to a real that reset succeeded")
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := newTestEngine(t)
			real := startManyReal(t, tc.handle)
			vip := serve(t, e, VIP{ConnectTimeout: manyConnectTimeout, Picker: staticPicker{real}})

			before := settleFDs(t)
			var wg sync.WaitGroup
			for range flows {
				c := dial(t, vip)
				wg.Go(func() { tc.client(t, c) })
			}
			wg.Wait()

			waitFor(t, "every flow closed", func() bool {
				return testutil.ToFloat64(e.m.active.WithLabelValues("test")) == 0
			})
			waitFor(t, "sockets and pipes closed", func() bool {
				now := countFDs(t)
				// Each client socket stays open until its cleanup runs.
				return now.sockets-before.sockets <= flows && now.pipes-before.pipes <= 2*maxIdlePipes
			})
		})
	}
}

// TestSpliceBothWaysHalfClose uploads and downloads 16 MiB on one flow at
// the same time, then half-closes each side in turn.
func TestSpliceBothWaysHalfClose(t *testing.T) {
	e, _ := newTestEngine(t)
	download := testPayload(16 << 20)
	uploaded := make(chan []byte, 1)
	real, _ := startReal(t, func(rc *realConn) {
		go func() {
			_, _ = rc.conn.Write(download)
			_ = rc.conn.(*net.TCPConn).CloseWrite()
		}()
		got, err := io.ReadAll(rc.r)
		if err != nil {
			t.Errorf("real: read upload: %v", err)
		}
		uploaded <- got
	})
	vip := serve(t, e, VIP{IdleTimeout: time.Minute, ConnectTimeout: manyConnectTimeout, Picker: staticPicker{real}})
	c := dial(t, vip)

	upload := testPayload(16<<20 + 3)
	go func() {
		if _, err := c.Write(upload); err != nil {
			t.Errorf("upload: %v", err)
		}
		_ = c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	if !bytes.Equal(got, download) {
		t.Errorf("downloaded %d bytes that differ from the %d sent", len(got), len(download))
	}
	if up := <-uploaded; !bytes.Equal(up, upload) {
		t.Errorf("real received %d bytes that differ from the %d uploaded", len(up), len(upload))
	}
}

// TestCopyModesKeepOrder sends messages of sizes around the read buffer on
// one flow, so the direction starts with reads and writes, switches to
// splice, and the bytes must arrive in order.
func TestCopyModesKeepOrder(t *testing.T) {
	e, _ := newTestEngine(t)
	real, _ := startReal(t, plainEcho)
	vip := serve(t, e, VIP{Picker: staticPicker{real}})
	c := dial(t, vip)

	var total int
	for _, size := range []int{1, 100, copyBufferSize - 1, copyBufferSize, copyBufferSize + 1, 3 * copyBufferSize, 5, 1 << 20, 7} {
		exchange(t, c, testPayload(size))
		total += size
	}
	_ = c.CloseWrite()
	if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
		t.Fatalf("after half-close: read %d more bytes, err %v; want EOF", len(rest), err)
	}
	waitFor(t, "byte counters", func() bool {
		return testutil.ToFloat64(e.m.bytes.WithLabelValues("test", real, "client_to_real")) == float64(total) &&
			testutil.ToFloat64(e.m.bytes.WithLabelValues("test", real, "real_to_client")) == float64(total)
	})
}

// testPayload returns n bytes that differ at every offset modulo 251.
func testPayload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// gatedPicker is staticPicker that waits for release before it returns, so
// a test can make the client act before the engine dials.
type gatedPicker struct {
	reals   staticPicker
	release chan struct{}
}

func (p gatedPicker) Pick(client, vip netip.AddrPort, n int) []string {
	<-p.release
	return p.reals.Pick(client, vip, n)
}

// TestEarlyBytesGoWithHeader has the client send a request and its FIN
// before the engine dials: the real must read the header, the request and
// EOF in that order, and the response must reach the client.
func TestEarlyBytesGoWithHeader(t *testing.T) {
	e, _ := newTestEngine(t)
	real, headers := startReal(t, func(rc *realConn) {
		req, err := io.ReadAll(rc.r)
		if err != nil {
			t.Errorf("real: read request: %v", err)
			return
		}
		_, _ = rc.conn.Write(append([]byte("got "), req...))
	})
	gate := gatedPicker{reals: staticPicker{real}, release: make(chan struct{})}
	vip := serve(t, e, VIP{Picker: gate})

	c := dial(t, vip)
	if _, err := c.Write([]byte("early")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let the bytes and the FIN reach the engine's socket
	close(gate.release)

	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	if string(got) != "got early" {
		t.Errorf("response = %q, want %q", got, "got early")
	}
	if h := <-headers; h.Version != 2 {
		t.Errorf("header version = %d, want 2", h.Version)
	}
	waitFor(t, "client_to_real byte counter", func() bool {
		return testutil.ToFloat64(e.m.bytes.WithLabelValues("test", real, "client_to_real")) == 5
	})
}

// TestEarlyResetEndsFlow resets the client before the engine dials: the
// real gets the header and then the connection ends, with nothing left
// open.
func TestEarlyResetEndsFlow(t *testing.T) {
	e, _ := newTestEngine(t)
	ended := make(chan struct{})
	real, headers := startReal(t, func(rc *realConn) {
		_, _ = io.Copy(io.Discard, rc.r) // returns at EOF or a reset
		close(ended)
	})
	gate := gatedPicker{reals: staticPicker{real}, release: make(chan struct{})}
	vip := serve(t, e, VIP{Picker: gate})

	c := dial(t, vip)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetLinger(0)
	c.Close()
	time.Sleep(50 * time.Millisecond) // let the reset reach the engine's socket
	close(gate.release)

	select {
	case <-headers:
	case <-time.After(5 * time.Second):
		t.Fatal("real received no PROXY header")
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("connection to the real stayed open after the client reset")
	}
	waitFor(t, "flow closed", func() bool {
		return testutil.ToFloat64(e.m.active.WithLabelValues("test")) == 0
	})
}

// TestNoPipeFallsBackToBuffer makes every pipe open fail, as it would at
// the open-file limit: flows must still move bulk data, through buffers.
func TestNoPipeFallsBackToBuffer(t *testing.T) {
	e, _ := newTestEngine(t)
	var failed atomic.Int64
	e.pipes.open = func() (*pipe, error) {
		failed.Add(1)
		return nil, os.NewSyscallError("pipe2", unix.EMFILE)
	}
	real, _ := startReal(t, plainEcho)
	vip := serve(t, e, VIP{Picker: staticPicker{real}})
	c := dial(t, vip)

	exchange(t, c, testPayload(4<<20))
	exchange(t, c, testPayload(100))
	if failed.Load() == 0 {
		t.Fatal("no pipe was requested, so the fallback was not exercised")
	}
	_ = c.CloseWrite()
	if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
		t.Errorf("after half-close: read %d more bytes, err %v; want EOF", len(rest), err)
	}
	want := float64(4<<20 + 100)
	waitFor(t, "byte counters", func() bool {
		return testutil.ToFloat64(e.m.bytes.WithLabelValues("test", real, "client_to_real")) == want &&
			testutil.ToFloat64(e.m.bytes.WithLabelValues("test", real, "real_to_client")) == want
	})
}
