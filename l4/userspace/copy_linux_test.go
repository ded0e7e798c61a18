//go:build linux

package userspace

import (
	"bytes"
	"io"
	"net"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// tcpPair returns both ends of one loopback TCP connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// unsentLowat reads TCP_NOTSENT_LOWAT of c. Zero means the sysctl default.
func unsentLowat(t *testing.T, c *net.TCPConn) int {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		v, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT)
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatalf("getsockopt TCP_NOTSENT_LOWAT: %v", gerr)
	}
	return v
}

// TestSpliceLimitsUnsentBytes copies through copyHalf. A short message
// leaves the destination's TCP_NOTSENT_LOWAT alone, and the first read that
// fills the buffer sets it before the bulk bytes are spliced.
func TestSpliceLimitsUnsentBytes(t *testing.T) {
	writer, src := tcpPair(t)
	dst, reader := tcpPair(t)
	before := unsentLowat(t, dst)
	if before == spliceUnsentLowat {
		t.Fatalf("TCP_NOTSENT_LOWAT is already %d before any copy", before)
	}

	var moved atomic.Uint64
	done := make(chan error, 1)
	go func() {
		_, err := copyHalf(dst, src, newPipePool(), &moved, prometheus.NewCounter(prometheus.CounterOpts{Name: "test_bytes"}), func() bool { return false })
		done <- err
	}()

	short := []byte("short message")
	if _, err := writer.Write(short); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(short))
	if _, err := io.ReadFull(reader, got); err != nil {
		t.Fatalf("read short message: %v", err)
	}
	if !bytes.Equal(got, short) {
		t.Fatalf("short message: read %q, want %q", got, short)
	}
	if v := unsentLowat(t, dst); v != before {
		t.Errorf("after %d bytes TCP_NOTSENT_LOWAT = %d, want %d (unchanged)", len(short), v, before)
	}

	bulk := testPayload(4 << 20)
	go func() {
		_, _ = writer.Write(bulk)
		_ = writer.CloseWrite()
	}()
	got, err := io.ReadAll(reader)
	if err != nil {
		t.Fatalf("read bulk: %v", err)
	}
	if !bytes.Equal(got, bulk) {
		t.Fatalf("bulk: read %d bytes that differ from the %d sent", len(got), len(bulk))
	}
	if err := <-done; err != nil {
		t.Fatalf("copyHalf: %v", err)
	}
	if v := unsentLowat(t, dst); v != spliceUnsentLowat {
		t.Errorf("after a bulk transfer TCP_NOTSENT_LOWAT = %d, want %d", v, spliceUnsentLowat)
	}
	if n := moved.Load(); n != uint64(len(short)+len(bulk)) {
		t.Errorf("moved = %d, want %d", n, len(short)+len(bulk))
	}
}
