//go:build linux

package userspace

import (
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// keepAliveOptions reads SO_KEEPALIVE and TCP_KEEPIDLE (in seconds) of c.
func keepAliveOptions(t *testing.T, c *net.TCPConn) (on, idle int) {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var errOn, errIdle error
	err = raw.Control(func(fd uintptr) {
		on, errOn = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE)
		idle, errIdle = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)
	})
	if err != nil || errOn != nil || errIdle != nil {
		t.Fatalf("getsockopt: %v, %v, %v", err, errOn, errIdle)
	}
	return on, idle
}

func TestEngineTCPKeepAlive(t *testing.T) {
	tests := []struct {
		name     string
		setting  time.Duration
		wantOn   int
		wantIdle int // checked only when keep-alive is on
	}{
		{"off by default", 0, 0, 0},
		{"on with idle", 45 * time.Second, 1, 45},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			realAddr, _ := startReal(t, echo)
			e, _ := newTestEngine(t)
			addr := serve(t, e, VIP{Picker: staticPicker{realAddr}, TCPKeepAlive: tc.setting})

			c := dial(t, addr)
			defer c.Close()
			echoOnce(t, c)
			checkKeepAlive(t, e, tc.wantOn, tc.wantIdle)
		})
	}
}

// TestEngineTCPKeepAliveReload turns keep-alive on through Update: the
// listener stays, and the next connection gets the new setting.
func TestEngineTCPKeepAliveReload(t *testing.T) {
	realAddr, _ := startReal(t, echo)
	e, _ := newTestEngine(t)
	v := VIP{
		Name: "test", Address: "127.0.0.1:0", ProxyVersion: 2,
		ConnectTimeout: time.Second, DialAttempts: 1, Picker: staticPicker{realAddr},
	}
	addr := serve(t, e, v)

	first := dial(t, addr)
	echoOnce(t, first)
	checkKeepAlive(t, e, 0, 0)
	first.Close()
	waitFor(t, "first connection untracked", func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return len(e.conns) == 0
	})

	v.TCPKeepAlive = 30 * time.Second
	if err := e.Update([]VIP{v}); err != nil {
		t.Fatal(err)
	}
	if got := e.Addrs()[v.Address].String(); got != addr {
		t.Fatalf("listener after Update = %s, want the same %s", got, addr)
	}
	second := dial(t, addr)
	defer second.Close()
	echoOnce(t, second)
	checkKeepAlive(t, e, 1, 30)
}

// echoOnce sends a few bytes through c and reads the echo back, so the
// engine has set up both sockets of the connection.
func echoOnce(t *testing.T, c *net.TCPConn) {
	t.Helper()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read echo: %v", err)
	}
}

// checkKeepAlive checks SO_KEEPALIVE, and TCP_KEEPIDLE when it is on, on
// the client and the real socket of the engine's only open connection.
func checkKeepAlive(t *testing.T, e *Engine, wantOn, wantIdle int) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.conns) != 2 {
		t.Fatalf("engine tracks %d sockets, want 2 (client and real)", len(e.conns))
	}
	for s := range e.conns {
		on, idle := keepAliveOptions(t, s)
		if on != wantOn {
			t.Errorf("socket %s->%s SO_KEEPALIVE = %d, want %d", s.LocalAddr(), s.RemoteAddr(), on, wantOn)
		}
		if wantOn == 1 && idle != wantIdle {
			t.Errorf("socket %s->%s TCP_KEEPIDLE = %d, want %d", s.LocalAddr(), s.RemoteAddr(), idle, wantIdle)
		}
	}
}
