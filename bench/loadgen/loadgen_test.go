package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func newTLSBackend(t *testing.T) (*httptest.Server, *x509.CertPool) {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	}))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	return srv, roots
}

func TestHandshakeFullNeverResumes(t *testing.T) {
	srv, roots := newTLSBackend(t)
	res := handshakeLoad(context.Background(), handshakeConfig{
		Addr: srv.Listener.Addr().String(), ServerName: "example.com", Path: "/",
		Concurrency: 2, Duration: 300 * time.Millisecond, Roots: roots,
	})
	if res.FirstError != nil {
		t.Fatalf("handshakeLoad() first error: %v", res.FirstError)
	}
	if res.Connections == 0 {
		t.Fatalf("handshakeLoad() made no connection")
	}
	if res.Resumed != 0 {
		t.Errorf("handshakeLoad() without resume resumed %d of %d", res.Resumed, res.Connections)
	}
	if len(res.Latencies) != res.Connections {
		t.Errorf("handshakeLoad() has %d latencies for %d connections", len(res.Latencies), res.Connections)
	}
}

func TestHandshakeResumeResumes(t *testing.T) {
	srv, roots := newTLSBackend(t)
	res := handshakeLoad(context.Background(), handshakeConfig{
		Addr: srv.Listener.Addr().String(), ServerName: "example.com", Path: "/",
		Concurrency: 2, Duration: 300 * time.Millisecond, Resume: true, Roots: roots,
	})
	if res.FirstError != nil {
		t.Fatalf("handshakeLoad() first error: %v", res.FirstError)
	}
	// Only the first handshake of each worker can miss the cache.
	if res.Connections < 4 || res.Resumed < res.Connections-2 {
		t.Errorf("handshakeLoad() with resume resumed %d of %d", res.Resumed, res.Connections)
	}
}

func TestHandshakeWrongRootFails(t *testing.T) {
	srv, _ := newTLSBackend(t)
	res := handshakeLoad(context.Background(), handshakeConfig{
		Addr: srv.Listener.Addr().String(), ServerName: "example.com", Path: "/",
		Concurrency: 1, Duration: 100 * time.Millisecond, Roots: x509.NewCertPool(),
	})
	if res.Connections != 0 || res.Errors == 0 {
		t.Errorf("handshakeLoad() with an empty root pool: %d connections, %d errors", res.Connections, res.Errors)
	}
}

func TestHoldKeepsConnectionsOpen(t *testing.T) {
	var open atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)

	const n = 50
	conns, errs, firstErr := holdOpen(context.Background(), holdConfig{
		Addr:     srv.Listener.Addr().String(),
		Sources:  []netip.Addr{netip.MustParseAddr("127.0.0.1")},
		Count:    n,
		Parallel: 8,
	})
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	if errs != 0 {
		t.Fatalf("holdOpen() errors = %d, first: %v", errs, firstErr)
	}
	if len(conns) != n {
		t.Fatalf("holdOpen() held %d connections, want %d", len(conns), n)
	}
	if got := open.Load(); got != n {
		t.Errorf("server sees %d open connections, want %d", got, n)
	}
}

func TestCheckLoopback(t *testing.T) {
	tests := []struct {
		addr    string
		wantErr string
	}{
		{"127.0.0.1:80", ""},
		{"127.9.8.7:443", ""},
		{"[::1]:80", ""},
		{"10.0.0.1:80", "outside"},
		{"0.0.0.0:80", "outside"},
		{"localhost:80", "not an IP:port"},
		{"127.0.0.1", "not an IP:port"},
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			err := checkLoopback(tc.addr)
			if tc.wantErr == "" && err != nil {
				t.Errorf("checkLoopback(%q) = %v, want nil", tc.addr, err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("checkLoopback(%q) = %v, want an error containing %q", tc.addr, err, tc.wantErr)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	lat := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	tests := []struct {
		p    int
		want time.Duration
	}{{50, 5}, {99, 10}, {100, 10}, {1, 1}}
	for _, tc := range tests {
		if got := percentile(lat, tc.p); got != tc.want {
			t.Errorf("percentile(1..10, %d) = %d, want %d", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("percentile(nil, 50) = %d, want 0", got)
	}
}
