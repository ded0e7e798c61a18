//go:build integration

package integration

import (
	"bufio"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidegate/tidegate/shared/echo"
)

// recordingBackend is an echo backend on 127.0.0.1 that counts every
// connection it accepts and every byte it reads, so a test can show that
// a rejected request reached no backend at all, not even as bytes.
type recordingBackend struct {
	addr  string
	echo  *echo.Handler
	conns atomic.Int64
	bytes atomic.Int64
}

func startRecordingBackend(t *testing.T, name string) *recordingBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &recordingBackend{addr: ln.Addr().String(), echo: &echo.Handler{Name: name}}
	srv := &http.Server{Handler: b.echo, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(recordingListener{Listener: ln, b: b}) }()
	t.Cleanup(func() { srv.Close() })
	return b
}

type recordingListener struct {
	net.Listener
	b *recordingBackend
}

func (l recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.b.conns.Add(1)
	return recordingConn{Conn: c, b: l.b}, nil
}

type recordingConn struct {
	net.Conn
	b *recordingBackend
}

func (c recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.b.bytes.Add(int64(n))
	return n, err
}

// rawExchange connects to addr, writes each part of parts (pausing between
// them when pause is set), and reads one HTTP response. It returns an error
// when no response arrives within 10 seconds.
func rawExchange(t *testing.T, addr string, pause time.Duration, parts ...string) (*http.Response, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for i, p := range parts {
		if i > 0 && pause > 0 {
			time.Sleep(pause)
		}
		// A write may fail once the proxy has rejected the request and
		// closed the connection, and the response is still readable.
		if _, err := c.Write([]byte(p)); err != nil {
			break
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return resp, nil
}
