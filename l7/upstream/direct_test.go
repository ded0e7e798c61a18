package upstream

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidegate/tidegate/shared/config"
)

// countingListener accepts connections on 127.0.0.1 and counts them and
// the ones the peer has closed.
func countingListener(t *testing.T) (addr string, accepted, closed *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted, closed = new(atomic.Int32), new(atomic.Int32)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer c.Close()
				buf := make([]byte, 64)
				for {
					if _, err := c.Read(buf); err != nil {
						closed.Add(1)
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), accepted, closed
}

func waitCount(t *testing.T, what string, n *atomic.Int32, want int32) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for n.Load() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %d, want %d", what, n.Load(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDirectConnReuse(t *testing.T) {
	addr, accepted, closed := countingListener(t)
	p := testPool(t, config.Upstream{Backends: []config.Backend{{Address: addr}}, MaxIdlePerBackend: 1})
	if !p.DirectCapable() {
		t.Fatal("plain HTTP/1.1 pool is not direct capable")
	}
	b := p.Pick(nil)
	ctx := context.Background()

	first, err := p.DirectConn(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if first.Reused {
		t.Error("new connection marked reused")
	}
	p.ReleaseDirect(first, true)
	again, err := p.DirectConn(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if again != first || !again.Reused {
		t.Errorf("got a new connection, want the idle one back marked reused")
	}

	// With room for one idle connection, the second is closed on release.
	second, err := p.DirectConn(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	p.ReleaseDirect(again, true)
	p.ReleaseDirect(second, true)
	waitCount(t, "accepted", accepted, 2)
	waitCount(t, "closed by the proxy", closed, 1)

	// A connection released as not reusable is closed.
	c, err := p.DirectConn(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	p.ReleaseDirect(c, false)
	waitCount(t, "closed by the proxy", closed, 2)
	if got := b.conns.Load(); got != 0 {
		t.Errorf("backend connection count = %d, want 0", got)
	}
}

func TestDirectConnExpiryAndClose(t *testing.T) {
	addr, _, closed := countingListener(t)
	p := testPool(t, config.Upstream{
		Backends:          []config.Backend{{Address: addr}},
		MaxIdlePerBackend: 4,
		IdleTimeout:       config.Duration(200 * time.Millisecond),
	})
	p.Start()
	b := p.Pick(nil)
	c, err := p.DirectConn(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	p.ReleaseDirect(c, true)
	// The expiry closes the idle connection without any further request.
	waitCount(t, "closed by the proxy", closed, 1)

	c, err = p.DirectConn(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	// After Close, a released connection is closed rather than kept.
	p.ReleaseDirect(c, true)
	waitCount(t, "closed by the proxy", closed, 2)
}

func TestDirectCapable(t *testing.T) {
	cases := map[string]config.Upstream{
		"tls":  {TLS: true},
		"h2c":  {Protocol: "h2c"},
		"hash": {Balance: "hash", HashKey: "client"},
	}
	for name, cfg := range cases {
		cfg.Backends = []config.Backend{{Address: "127.0.0.1:1"}}
		if testPool(t, cfg).DirectCapable() {
			t.Errorf("%s pool is direct capable", name)
		}
	}
	stub := testPool(t, config.Upstream{Backends: []config.Backend{{Address: "127.0.0.1:1"}}}, WithTransport(nil))
	if stub.DirectCapable() {
		t.Error("pool with a replaced transport is direct capable")
	}
}

func TestDirectConnDialFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := testPool(t, config.Upstream{Backends: []config.Backend{{Address: addr}}})
	_, err = p.DirectConn(context.Background(), p.Pick(nil))
	if err == nil || !IsConnectError(err) {
		t.Errorf("dial to a closed port: %v, want a connect error", err)
	}
}

// TestDirectConnSkipsUnsolicited parks a connection whose backend then
// sends an unsolicited 408 and closes, as some servers do on an idle
// timeout. Taking it from the pool must give a new connection instead.
func TestDirectConnSkipsUnsolicited(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	p := testPool(t, config.Upstream{Backends: []config.Backend{{Address: ln.Addr().String()}}, MaxIdlePerBackend: 2})
	b := p.Pick(nil)
	c, err := p.DirectConn(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	p.ReleaseDirect(c, true)

	// A quiet idle connection comes back.
	if again, _ := p.DirectConn(context.Background(), b); again != c {
		t.Fatal("quiet idle connection was not reused")
	}
	p.ReleaseDirect(c, true)

	if _, err := server.Write([]byte("HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	server.Close()
	fresh, err := p.DirectConn(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	if fresh == c || fresh.Reused {
		t.Error("the connection with an unsolicited response came back from the pool")
	}
	p.ReleaseDirect(fresh, false)
}
