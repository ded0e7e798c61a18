package l7

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tidegate/tidegate/l7/conninfo"
	"github.com/tidegate/tidegate/shared/config"
)

const benchConfig = `
l7:
  access_log: {path: "off"}
  listeners:
    - name: http
      address: "127.0.0.1:0"
  routes:
    - name: everything
      match: {path_prefix: /}
      upstream: backend
  upstreams:
    - name: backend
      backends:
        - address: %q
`

// startBenchProxy starts an L7 server with one plain listener in front of
// backend and returns the listener's address.
func startBenchProxy(b *testing.B, backend string) (*Server, string) {
	b.Helper()
	f, err := config.Parse(fmt.Appendf(nil, benchConfig, backend))
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(f, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Drain(ctx)
	})
	return s, s.Addrs()["http"].String()
}

// BenchmarkProxyKeepAlive sends requests one after another on one
// keep-alive connection through the whole L7 path: accept, parse, route,
// rewrite, the pooled upstream transport to a loopback backend, and the
// response. Allocations include the client and backend in this process.
//
// NOTE: upstream.Pool builds its own http.Transport and accepts no
// RoundTripper, so the backend is a loopback server, not a stub transport.
func BenchmarkProxyKeepAlive(b *testing.B) {
	body := strings.Repeat("0", 128)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, body)
	}))
	b.Cleanup(backend.Close)
	_, addr := startBenchProxy(b, backend.Listener.Addr().String())

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	br := bufio.NewReader(conn)
	request := []byte("GET / HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: bench\r\n\r\n")

	b.ReportAllocs()
	for b.Loop() {
		if _, err := conn.Write(request); err != nil {
			b.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || n != int64(len(body)) {
			b.Fatalf("response %s with %d body bytes, want 200 with %d", resp.Status, n, len(body))
		}
	}
}

// BenchmarkRewrite measures the forwarding-header rewrite that runs on
// every proxied request: strip inbound copies, then set X-Forwarded-*,
// X-Real-IP and Forwarded from the connection's client address.
func BenchmarkRewrite(b *testing.B) {
	s, _ := startBenchProxy(b, "127.0.0.1:9")
	in := httptest.NewRequest("GET", "http://bench.example/path?q=1", nil)
	in.Header.Set("X-Forwarded-For", "203.0.113.9")
	in.Header.Set("Forwarded", "for=203.0.113.9;proto=https")
	in.Header.Set("Accept", "*/*")
	info := &conninfo.Info{
		Client:   netip.MustParseAddrPort("198.51.100.7:40000"),
		Peer:     netip.MustParseAddrPort("127.0.0.1:50000"),
		Local:    netip.MustParseAddrPort("192.0.2.1:443"),
		Listener: "http",
	}
	in = in.WithContext(conninfo.NewContext(in.Context(), info))

	b.ReportAllocs()
	for b.Loop() {
		pr := &httputil.ProxyRequest{In: in, Out: in.Clone(in.Context())}
		s.rewrite(pr)
		if pr.Out.Header.Get("X-Forwarded-For") == "" {
			b.Fatal("rewrite set no X-Forwarded-For")
		}
	}
}

func BenchmarkParseForwarded(b *testing.B) {
	v := `for=192.0.2.60;proto=http;by=203.0.113.43, for="[2001:db8:cafe::17]:4711";host=example.com`
	b.ReportAllocs()
	for b.Loop() {
		els, err := ParseForwarded(v)
		if err != nil || len(els) != 2 {
			b.Fatalf("ParseForwarded(%q) = %v, %v", v, els, err)
		}
	}
}
