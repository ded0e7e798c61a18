//go:build integration

package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// startStreamBackend runs a backend with a WebSocket echo at /ws and a slow
// download at /download (chunks of chunkSize every interval) on 127.0.0.1.
func startStreamBackend(t *testing.T, chunks, chunkSize int, interval time.Duration) string {
	t.Helper()
	up := websocket.Upgrader{}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, append([]byte("echo:"), msg...)); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/download", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(chunks*chunkSize))
		chunk := []byte(strings.Repeat("x", chunkSize))
		for i := range chunks {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			http.NewResponseController(w).Flush()
			if i < chunks-1 {
				time.Sleep(interval)
			}
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func dialWebSocket(t *testing.T, proxyAddr string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{
		NetDialContext:   dialL4(t, "", "198.51.100.20:6000", ""),
		HandshakeTimeout: 5 * time.Second,
	}
	c, resp, err := d.Dial("ws://"+proxyAddr+"/ws", nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("websocket dial through proxy: %v (status %d)", err, status)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func wsEcho(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("websocket write %q: %v", msg, err)
	}
	_, got, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("websocket read after %q: %v", msg, err)
	}
	if string(got) != "echo:"+msg {
		t.Fatalf("websocket echo = %q, want %q", got, "echo:"+msg)
	}
}

func TestL7WebSocketEcho(t *testing.T) {
	dir := t.TempDir()
	backend := startStreamBackend(t, 1, 1, 0)
	addr := freeAddr(t)
	startL7(t, dir, fmt.Sprintf(`listeners:
  - name: edge
    address: %s
    proxy_protocol:
      trusted: ["127.0.0.1/32"]
routes:
  - name: ws
    upstream: b
upstreams:
  - name: b
    backends:
      - address: %s
`, addr, backend))

	c := dialWebSocket(t, addr)
	for i := range 5 {
		wsEcho(t, c, fmt.Sprintf("message %d", i))
	}
}

// bytesCodec lets the gRPC test send raw bytes without generated code.
type bytesCodec struct{}

func (bytesCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (bytesCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (bytesCodec) Name() string { return "bytes" }

// startGRPCBackend serves /test.Echo/Chat, a bidirectional stream that
// echoes each message and ends with a trailer counting them.
func startGRPCBackend(t *testing.T) string {
	t.Helper()
	srv := grpc.NewServer(grpc.ForceServerCodec(bytesCodec{}))
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "test.Echo",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "Chat",
			ServerStreams: true,
			ClientStreams: true,
			Handler: func(_ any, stream grpc.ServerStream) error {
				n := 0
				for {
					var msg []byte
					err := stream.RecvMsg(&msg)
					if errors.Is(err, io.EOF) {
						stream.SetTrailer(metadata.Pairs("x-count", strconv.Itoa(n)))
						return nil
					}
					if err != nil {
						return err
					}
					n++
					reply := append([]byte("echo:"), msg...)
					if err := stream.SendMsg(&reply); err != nil {
						return err
					}
				}
			},
		}},
	}, struct{}{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

func TestL7GRPCBidiStream(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSignedCert(t, dir, "grpc-", "grpc.example.test")
	backend := startGRPCBackend(t)
	tlsAddr, h2cAddr := freeAddr(t), freeAddr(t)
	startL7(t, dir, fmt.Sprintf(`listeners:
  - name: tls
    address: %s
    proxy_protocol:
      trusted: ["127.0.0.1/32"]
    tls:
      certificates:
        - cert_file: %s
          key_file: %s
  - name: h2c
    address: %s
    h2c: true
routes:
  - name: grpc
    upstream: grpc
upstreams:
  - name: grpc
    protocol: h2c
    backends:
      - address: %s
`, tlsAddr, certFile, keyFile, h2cAddr, backend))

	chat := func(t *testing.T, conn *grpc.ClientConn) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/test.Echo/Chat")
		if err != nil {
			t.Fatalf("open stream: %v", err)
		}
		// Each reply is read before the next message is sent, so the
		// exchange only works if both directions stream.
		for i := range 3 {
			msg := []byte(fmt.Sprintf("ping %d", i))
			if err := stream.SendMsg(&msg); err != nil {
				t.Fatalf("send %q: %v", msg, err)
			}
			var reply []byte
			if err := stream.RecvMsg(&reply); err != nil {
				t.Fatalf("receive reply to %q: %v", msg, err)
			}
			if want := "echo:" + string(msg); string(reply) != want {
				t.Fatalf("reply = %q, want %q", reply, want)
			}
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		var extra []byte
		if err := stream.RecvMsg(&extra); !errors.Is(err, io.EOF) {
			t.Fatalf("RecvMsg after CloseSend = %v, want io.EOF (status OK)", err)
		}
		if got := stream.Trailer().Get("x-count"); len(got) != 1 || got[0] != "3" {
			t.Errorf("trailer x-count = %q, want [3]", got)
		}
	}

	t.Run("h2c", func(t *testing.T) {
		conn, err := grpc.NewClient("passthrough:///"+h2cAddr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(bytesCodec{})))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		chat(t, conn)
	})

	t.Run("tls with proxy header", func(t *testing.T) {
		dial := dialL4(t, "", "198.51.100.30:7000", "")
		conn, err := grpc.NewClient("passthrough:///"+tlsAddr,
			grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "grpc.example.test"})),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				return dial(ctx, "tcp", addr)
			}),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(bytesCodec{})))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		chat(t, conn)
	})
}

// TestL7DrainFinishesStreams sends SIGTERM while a slow HTTP/1.1 download,
// a slow HTTP/2 download and a WebSocket are open: all three must finish,
// an idle keep-alive connection is closed, the HTTP/2 client gets GOAWAY,
// and no new connection is accepted.
func TestL7DrainFinishesStreams(t *testing.T) {
	dir := t.TempDir()
	const chunks, chunkSize = 10, 64 << 10
	backend := startStreamBackend(t, chunks, chunkSize, 200*time.Millisecond)
	addr := freeAddr(t)
	l7 := startL7(t, dir, fmt.Sprintf(`listeners:
  - name: edge
    address: %s
    h2c: true
    proxy_protocol:
      trusted: ["127.0.0.1/32"]
routes:
  - name: all
    upstream: b
upstreams:
  - name: b
    backends:
      - address: %s
`, addr, backend))

	ws := dialWebSocket(t, addr)
	wsEcho(t, ws, "before")

	c := l4Client(t, "198.51.100.21:6000", nil, "")
	resp, err := c.Get("http://" + addr + "/download")
	if err != nil {
		t.Fatalf("start download: %v", err)
	}
	defer resp.Body.Close()
	first := make([]byte, chunkSize)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatalf("read first chunk: %v", err)
	}

	h2tr := &http.Transport{DialContext: dialL4(t, "", "198.51.100.22:6000", ""), Protocols: new(http.Protocols)}
	h2tr.Protocols.SetUnencryptedHTTP2(true)
	defer h2tr.CloseIdleConnections()
	h2c := &http.Client{Transport: h2tr, Timeout: 15 * time.Second}
	h2resp, err := h2c.Get("http://" + addr + "/download")
	if err != nil {
		t.Fatalf("start h2c download: %v", err)
	}
	defer h2resp.Body.Close()
	if h2resp.Proto != "HTTP/2.0" {
		t.Fatalf("h2c download proto = %s, want HTTP/2.0", h2resp.Proto)
	}

	// This keep-alive connection serves one request and then stays idle.
	idle, err := dialL4(t, "", "198.51.100.23:6000", "")(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if _, err := io.WriteString(idle, "GET /ws-not HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	idleReader := bufio.NewReader(idle)
	if r, err := http.ReadResponse(idleReader, nil); err != nil {
		t.Fatalf("request on keep-alive connection: %v", err)
	} else {
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}

	if err := l7.signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := idleReader.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("idle keep-alive connection after SIGTERM: read %d bytes, err %v; want EOF", n, err)
	}
	eventually(t, 5*time.Second, "listener closed after SIGTERM", func() bool {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true
		}
		conn.Close()
		return false
	})

	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("download cut during drain after %d bytes: %v", chunkSize+len(rest), err)
	}
	if got := chunkSize + len(rest); got != chunks*chunkSize {
		t.Errorf("download got %d bytes, want %d", got, chunks*chunkSize)
	}

	h2rest, err := io.ReadAll(h2resp.Body)
	if err != nil || len(h2rest) != chunks*chunkSize {
		t.Errorf("h2c download during drain got %d bytes, err %v; want %d", len(h2rest), err, chunks*chunkSize)
	}
	// After GOAWAY the client may not open a stream on that connection,
	// and the listener is closed, so a new request must fail.
	if r, err := h2c.Get("http://" + addr + "/download"); err == nil {
		r.Body.Close()
		t.Error("new HTTP/2 request after SIGTERM succeeded")
	}

	wsEcho(t, ws, "during drain")
	if l7.exited() {
		t.Fatal("process exited while a WebSocket was still open")
	}
	_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	ws.Close()
	if !l7.wait(15 * time.Second) {
		t.Fatal("process did not exit after the last stream closed")
	}
	if l7.err != nil {
		t.Errorf("process exit: %v", l7.err)
	}
}
