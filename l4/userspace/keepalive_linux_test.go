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
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(c, buf); err != nil {
				t.Fatalf("read echo: %v", err)
			}

			// The echo came back, so the engine holds both the client and
			// the real socket of this connection.
			e.mu.Lock()
			defer e.mu.Unlock()
			if len(e.conns) != 2 {
				t.Fatalf("engine tracks %d sockets, want 2 (client and real)", len(e.conns))
			}
			for s := range e.conns {
				on, idle := keepAliveOptions(t, s)
				if on != tc.wantOn {
					t.Errorf("socket %s->%s SO_KEEPALIVE = %d, want %d", s.LocalAddr(), s.RemoteAddr(), on, tc.wantOn)
				}
				if tc.wantOn == 1 && idle != tc.wantIdle {
					t.Errorf("socket %s->%s TCP_KEEPIDLE = %d, want %d", s.LocalAddr(), s.RemoteAddr(), idle, tc.wantIdle)
				}
			}
		})
	}
}
