package l4

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/tidegate/tidegate/l4/proxyheader"
	"github.com/tidegate/tidegate/shared/config"
)

// TestHealthHTTPWithProxyHeader checks an L7-style /readyz that requires a
// PROXY v2 header: the real stays up while it returns 200 and goes down when
// it returns 503, as an L7 does while it drains.
func TestHealthHTTPWithProxyHeader(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var ready atomic.Bool
	ready.Store(true)
	var headers, withID atomic.Int64
	pln := &proxyproto.Listener{
		Listener: ln,
		ConnPolicy: func(proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
			return proxyproto.REQUIRE, nil
		},
		ReadHeaderTimeout: time.Second,
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/readyz" {
				http.NotFound(w, r)
				return
			}
			if !ready.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			w.WriteHeader(http.StatusOK)
		}),
		ConnState: func(c net.Conn, s http.ConnState) {
			if s != http.StateActive {
				return
			}
			if pc, ok := c.(*proxyproto.Conn); ok && pc.ProxyHeader() != nil {
				headers.Add(1)
				if _, ok := proxyheader.UniqueID(pc.ProxyHeader()); ok {
					withID.Add(1)
				}
			}
		},
	}
	go func() { _ = srv.Serve(pln) }()
	t.Cleanup(func() { srv.Close() })

	doc := fmt.Sprintf(`
l4:
  vips:
    - name: web
      address: 127.0.0.1:0
      health_check: {type: http, proxy_protocol: true, interval: 20ms, timeout: 15ms, rise: 1, fall: 1}
      reals:
        - address: 127.0.0.1:1
          health_address: %s
`, ln.Addr())
	f, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	b := newTestBalancer(t, f.L4)
	b.Start()
	v := b.VIP("web")
	r := v.Reals()[0]

	waitFor(t, "probes with a PROXY header", func() bool { return headers.Load() >= 3 })
	if !r.Healthy() {
		t.Fatalf("real down while /readyz returns 200: %s", r.LastError())
	}
	if withID.Load() == 0 {
		t.Error("health probes carried no UNIQUE_ID TLV")
	}

	ready.Store(false)
	waitFor(t, "real down on 503", func() bool { return !r.Healthy() })
	if r.LastError() == "" {
		t.Error("down real has no last error")
	}
	if p := v.Pick(netip.MustParseAddrPort("198.51.100.1:1000"), vipAddr, 1); p != nil {
		t.Errorf("Pick with the only real down = %v", p)
	}

	ready.Store(true)
	waitFor(t, "real up again", func() bool { return r.Healthy() })
}

// TestApplyRemovesHealthCheck reloads a VIP whose only real is down without
// its health check: the real counts as healthy again and takes flows.
func TestApplyRemovesHealthCheck(t *testing.T) {
	doc := `
l4:
  vips:
    - name: web
      address: 127.0.0.1:0
      health_check: {type: tcp, interval: 20ms, timeout: 10ms, rise: 1, fall: 1}
      reals:
        - address: 127.0.0.1:1
`
	f, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	b := newTestBalancer(t, f.L4)
	b.Start()
	v := b.VIP("web")
	waitFor(t, "real down", func() bool { return !v.Reals()[0].Healthy() })

	f2, err := config.Parse([]byte(strings.Replace(doc, "      health_check: {type: tcp, interval: 20ms, timeout: 10ms, rise: 1, fall: 1}\n", "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	b.Apply(f2.L4)
	r := v.Reals()[0]
	if !r.Healthy() {
		t.Error("real still down after its health check was removed")
	}
	// A probe of the stopped checker must not mark it down again.
	time.Sleep(60 * time.Millisecond)
	if !r.Healthy() {
		t.Error("stopped checker marked the real down after the reload")
	}
	if p := v.Pick(netip.MustParseAddrPort("198.51.100.1:1000"), vipAddr, 1); len(p) != 1 {
		t.Errorf("Pick after reload = %v, want the real", p)
	}
}
