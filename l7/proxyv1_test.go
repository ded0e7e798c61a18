package l7

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.Close()
		server.Close()
	})
	return client, server
}

// readHeaderThrough wraps server as the listener does and returns the
// header go-proxyproto parsed and the first bytes after it.
func readHeaderThrough(server net.Conn, policy proxyproto.Policy, after int) (*proxyproto.Header, []byte, error) {
	pc := proxyproto.NewConn(&v1GatherConn{Conn: server}, proxyproto.WithPolicy(policy),
		proxyproto.SetReadHeaderTimeout(2*time.Second))
	if _, err := pc.Read(nil); err != nil {
		return nil, nil, err
	}
	rest := make([]byte, after)
	_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(pc, rest); err != nil {
		return pc.ProxyHeader(), nil, err
	}
	return pc.ProxyHeader(), rest, nil
}

func TestV1GatherConnSplitHeader(t *testing.T) {
	const line = "PROXY TCP4 203.0.113.20 127.0.0.1 4000 80\r\n"
	const request = "GET / HTTP/1.1\r\n"
	tests := []struct {
		name  string
		parts []string
	}{
		{"one write", []string{line + request}},
		{"three writes", []string{"PROX", "Y TCP4 203.0.113.20 ", "127.0.0.1 4000 80\r\n" + request}},
		{"byte by byte", splitEvery(line, 1, request)},
		{"CR and LF apart", []string{line[:len(line)-1], "\n" + request}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := tcpPair(t)
			go func() {
				for _, p := range tt.parts {
					if _, err := io.WriteString(client, p); err != nil {
						return
					}
					// Each write leaves as its own segment after a pause.
					time.Sleep(10 * time.Millisecond)
				}
			}()
			h, rest, err := readHeaderThrough(server, proxyproto.REQUIRE, len(request))
			if err != nil {
				t.Fatalf("read header: %v", err)
			}
			if h == nil || h.Version != 1 {
				t.Fatalf("header %+v, want a v1 header", h)
			}
			src, _ := h.SourceAddr.(*net.TCPAddr)
			if src == nil || src.String() != "203.0.113.20:4000" {
				t.Errorf("source %v, want 203.0.113.20:4000", h.SourceAddr)
			}
			if string(rest) != request {
				t.Errorf("bytes after header %q, want %q", rest, request)
			}
		})
	}
}

func splitEvery(s string, n int, tail string) []string {
	var parts []string
	for len(s) > n {
		parts = append(parts, s[:n])
		s = s[n:]
	}
	return append(parts, s+tail)
}

// TestV1GatherConnPassesOtherBytes checks that bytes which cannot start a
// v1 line are returned after one read, without waiting for more.
func TestV1GatherConnPassesOtherBytes(t *testing.T) {
	for _, first := range []string{"GET / HTTP/1.1\r\n", "\x16\x03\x01", "\r\n\r\n", "PRI * HTTP/2.0"} {
		client, server := tcpPair(t)
		if _, err := io.WriteString(client, first); err != nil {
			t.Fatal(err)
		}
		c := &v1GatherConn{Conn: server}
		// No deadline: a Read that waited for more bytes would hang the
		// test until the go test timeout instead of passing.
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read %q: %v", first, err)
		}
		if !bytes.HasPrefix([]byte(first), buf[:n]) || n == 0 {
			t.Errorf("read %q, want a prefix of %q", buf[:n], first)
		}
	}
}

// TestV1GatherConnTimeout checks that a v1 line that never ends is still
// rejected when the header timeout passes.
func TestV1GatherConnTimeout(t *testing.T) {
	client, server := tcpPair(t)
	if _, err := io.WriteString(client, "PROXY TCP4 203.0.113.20"); err != nil {
		t.Fatal(err)
	}
	pc := proxyproto.NewConn(&v1GatherConn{Conn: server}, proxyproto.WithPolicy(proxyproto.REQUIRE),
		proxyproto.SetReadHeaderTimeout(200*time.Millisecond))
	if _, err := pc.Read(nil); err == nil {
		t.Fatalf("partial v1 header accepted, header %+v", pc.ProxyHeader())
	}
}

// TestV1GatherConnLongLine checks that a line longer than the v1 maximum is
// rejected and that gathering stops at that maximum.
func TestV1GatherConnLongLine(t *testing.T) {
	client, server := tcpPair(t)
	long := "PROXY " + string(bytes.Repeat([]byte("x"), 200))
	go func() { _, _ = io.WriteString(client, long) }()
	pc := proxyproto.NewConn(&v1GatherConn{Conn: server}, proxyproto.WithPolicy(proxyproto.REQUIRE),
		proxyproto.SetReadHeaderTimeout(2*time.Second))
	if _, err := pc.Read(nil); err == nil {
		t.Fatalf("over-long v1 line accepted, header %+v", pc.ProxyHeader())
	}
}

// FuzzV1GatherConn checks that any split of the same bytes gives the
// parser the same header, or the same rejection, as a single write.
func FuzzV1GatherConn(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\nGET"), uint8(3), uint8(9))
	f.Add([]byte("PROXY TCP6 2001:db8::1 2001:db8::2 65535 1\r\n"), uint8(6), uint8(40))
	f.Add([]byte("PROXY UNKNOWN\r\n"), uint8(1), uint8(2))
	f.Add([]byte("PROXY TCP4 1.2.3.4\n"), uint8(5), uint8(7))
	f.Add([]byte("GET / HTTP/1.1\r\n"), uint8(1), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, cut1, cut2 uint8) {
		if len(data) == 0 || len(data) > 300 {
			return
		}
		whole := parseAfterWrites(t, [][]byte{data})
		a, b := int(cut1)%len(data), int(cut2)%len(data)
		a, b = min(a, b), max(a, b)
		split := parseAfterWrites(t, [][]byte{data[:a], data[a:b], data[b:]})
		if whole != split {
			t.Errorf("input %q: one write gives %q, split at %d and %d gives %q", data, whole, a, b, split)
		}
	})
}

// parseAfterWrites sends parts over net.Pipe, which delivers each write to
// a separate read, and returns the parsed header or error as text.
func parseAfterWrites(t *testing.T, parts [][]byte) string {
	client, server := net.Pipe()
	defer server.Close()
	go func() {
		defer client.Close()
		for _, p := range parts {
			if len(p) > 0 {
				if _, err := client.Write(p); err != nil {
					return
				}
			}
		}
	}()
	pc := proxyproto.NewConn(&v1GatherConn{Conn: server}, proxyproto.WithPolicy(proxyproto.USE),
		proxyproto.SetReadHeaderTimeout(0))
	if _, err := pc.Read(nil); err != nil {
		return "error: " + err.Error()
	}
	if h := pc.ProxyHeader(); h != nil {
		return h.SourceAddr.String() + " " + h.DestinationAddr.String()
	}
	return "no header"
}
