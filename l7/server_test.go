package l7

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"

	"github.com/tidegate/tidegate/l7/conninfo"
	"github.com/tidegate/tidegate/shared/config"
)

// countingConn counts bytes net/http reads through a connection wrapper.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestHookPoints starts a real listener on 127.0.0.1 with a connection
// wrapper and a middleware, and checks that both run and that the
// middleware receives the connection details.
func TestHookPoints(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "backend")
	}))
	defer backend.Close()
	f, err := config.Parse([]byte(fmt.Sprintf(`
l7:
  listeners:
    - name: edge
      address: 127.0.0.1:0
  routes:
    - name: all
      upstream: b
  upstreams:
    - name: b
      backends:
        - address: %s
  access_log:
    path: "off"
`, strings.TrimPrefix(backend.URL, "http://"))))
	if err != nil {
		t.Fatal(err)
	}

	var wrapped atomic.Int64
	var seen atomic.Pointer[conninfo.Info]
	s, err := New(f, slog.New(slog.DiscardHandler), nil,
		WithConnWrapper(func(c net.Conn) net.Conn { return countingConn{Conn: c, n: &wrapped} }),
		WithMiddleware("probe", func(_ *config.L7, _ *config.Route, next http.Handler) (http.Handler, error) {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen.Store(conninfo.FromRequest(r))
				next.ServeHTTP(w, r)
			}), nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Drain(ctx)
	}()

	addr := s.Addrs()["edge"].String()
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "backend" {
		t.Fatalf("body %q, want backend", body)
	}
	if wrapped.Load() == 0 {
		t.Error("connection wrapper read no bytes")
	}
	info := seen.Load()
	if info == nil {
		t.Fatal("middleware saw no conninfo")
	}
	if got := info.Client.Addr().String(); got != "127.0.0.1" {
		t.Errorf("conninfo client = %s, want 127.0.0.1", got)
	}
	if info.Listener != "edge" {
		t.Errorf("conninfo listener = %q, want edge", info.Listener)
	}
}

func TestUpgradeTrackerWaitAndClose(t *testing.T) {
	tr := newUpgradeTracker(prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"}))
	if err := tr.wait(context.Background()); err != nil {
		t.Fatalf("wait with nothing tracked = %v, want nil", err)
	}
	a, b := net.Pipe()
	defer b.Close()
	c := tr.add(a)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := tr.wait(ctx); err == nil {
		t.Fatal("wait returned nil with an open upgraded connection")
	}

	done := make(chan error, 1)
	go func() { done <- tr.wait(context.Background()) }()
	c.Close()
	if err := <-done; err != nil {
		t.Errorf("wait after the connection closed = %v, want nil", err)
	}

	x, y := net.Pipe()
	defer y.Close()
	tr.add(x)
	if n := tr.closeAll(); n != 1 {
		t.Errorf("closeAll closed %d connections, want 1", n)
	}
	if _, err := x.Write([]byte("a")); err == nil {
		t.Error("connection still writable after closeAll")
	}
}

// TestErrorStatusEndToEnd runs a listener against real backends that
// refuse, stall and get abandoned, and checks the status each request gets
// and the status the access log records.
func TestErrorStatusEndToEnd(t *testing.T) {
	stall := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-stall:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(stall)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()

	logPath := filepath.Join(t.TempDir(), "access.log")
	f, err := config.Parse([]byte(fmt.Sprintf(`
l7:
  listeners:
    - name: edge
      address: 127.0.0.1:0
  routes:
    - name: refused
      match: {path: /refused}
      upstream: dead
    - name: slow
      match: {path: /slow}
      upstream: slow
    - name: abandoned
      match: {path: /abandoned}
      upstream: patient
  upstreams:
    - name: dead
      backends: [{address: %q}]
    - name: slow
      response_header_timeout: 100ms
      backends: [{address: %q}]
    - name: patient
      backends: [{address: %q}]
  access_log:
    path: %s
`, deadAddr, strings.TrimPrefix(slow.URL, "http://"), strings.TrimPrefix(slow.URL, "http://"), logPath)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(f, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Drain(ctx)
	}()
	base := "http://" + s.Addrs()["edge"].String()

	for path, want := range map[string]int{"/refused": 502, "/slow": 504} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d, want %d", path, resp.StatusCode, want)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/abandoned", nil)
	go func() {
		time.Sleep(100 * time.Millisecond)
		cancel()
	}()
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("abandoned request got a response")
	}

	want := map[string]float64{"/refused": 502, "/slow": 504, "/abandoned": 499}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := map[string]float64{}
		data, _ := os.ReadFile(logPath)
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var e struct {
				Path   string  `json:"path"`
				Status float64 `json:"status"`
			}
			if json.Unmarshal([]byte(line), &e) == nil {
				got[e.Path] = e.Status
			}
		}
		if reflect.DeepEqual(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("access log statuses = %v, want %v", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startTestServer starts a server from an l7 YAML section body on
// 127.0.0.1 and drains it at cleanup.
func startTestServer(t testing.TB, l7Body string) *Server {
	t.Helper()
	f, err := config.Parse([]byte("l7:\n" + l7Body))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(f, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Drain(ctx)
	})
	return s
}

// startH2C starts a server with one h2c listener, opens a connection to
// it, and sends the client preface and SETTINGS. It returns the server and
// a framer on the connection, whose deadline is 10 s away.
func startH2C(t *testing.T) (*Server, *http2.Framer) {
	t.Helper()
	s := startTestServer(t, `
  listeners:
    - name: edge
      address: 127.0.0.1:0
      h2c: true
  routes:
    - name: all
      upstream: b
  upstreams:
    - name: b
      backends: [{address: "127.0.0.1:1"}]
  access_log: {path: "off"}
`)
	c, err := net.Dial("tcp", s.Addrs()["edge"].String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return s, fr
}

// TestDrainSendsGoAway opens a raw HTTP/2 connection to an h2c listener and
// checks that Drain sends it a GOAWAY frame.
func TestDrainSendsGoAway(t *testing.T) {
	s, fr := startH2C(t)
	// Wait for the server's SETTINGS so the connection is established
	// before the drain starts.
	if _, err := fr.ReadFrame(); err != nil {
		t.Fatalf("read server settings: %v", err)
	}

	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		drained <- s.Drain(ctx)
	}()
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("connection ended without GOAWAY: %v", err)
		}
		if _, ok := f.(*http2.GoAwayFrame); ok {
			break
		}
	}
	if err := <-drained; err != nil {
		t.Errorf("Drain = %v, want nil", err)
	}
}

// TestH2FrameSizeLimit opens an h2c connection, checks that the listener
// advertises a 16 KiB SETTINGS_MAX_FRAME_SIZE, and sends a HEADERS frame
// one byte larger: the connection must end with a FRAME_SIZE_ERROR GOAWAY
// (RFC 9113 section 4.2).
func TestH2FrameSizeLimit(t *testing.T) {
	_, fr := startH2C(t)
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatalf("read server settings: %v", err)
	}
	settings, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("first frame is %v, want SETTINGS", f)
	}
	if v, ok := settings.Value(http2.SettingMaxFrameSize); !ok || v != maxH2FrameSize {
		t.Errorf("SETTINGS_MAX_FRAME_SIZE = %d (sent %v), want %d", v, ok, maxH2FrameSize)
	}
	if err := fr.WriteSettingsAck(); err != nil {
		t.Fatal(err)
	}

	// A header block fragment of maxH2FrameSize+1 bytes. Its content does
	// not matter: the frame's length alone is the error.
	block := bytes.Repeat([]byte{0}, maxH2FrameSize+1)
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("connection ended without GOAWAY: %v", err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeFrameSize {
				t.Errorf("GOAWAY error code %v, want FRAME_SIZE_ERROR", ga.ErrCode)
			}
			return
		}
	}
}

// BenchmarkProxyLoopback measures one request through a real listener to a
// real backend over 127.0.0.1 with keep-alive on both sides. It includes
// the kernel's loopback TCP cost, so it bounds throughput per core rather
// than the proxy's own overhead (see BenchmarkProxyRequest for that).
func BenchmarkProxyLoopback(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	defer backend.Close()
	for _, fast := range []bool{true, false} {
		name := "general"
		if fast {
			name = "fast"
		}
		b.Run(name, func(b *testing.B) {
			s := startTestServer(b, fmt.Sprintf(`
  listeners:
    - name: edge
      address: 127.0.0.1:0
      fast_path: %v
  routes:
    - name: all
      upstream: b
  upstreams:
    - name: b
      backends: [{address: %q}]
  access_log: {path: "off"}
`, fast, strings.TrimPrefix(backend.URL, "http://")))
			url := "http://" + s.Addrs()["edge"].String() + "/"
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
			defer client.CloseIdleConnections()
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.Get(url)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}
