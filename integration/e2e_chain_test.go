//go:build integration && linux

package integration

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tidegate/tidegate/integration/topology"
	"github.com/tidegate/tidegate/shared/config"
)

func TestE2EHTTPSRealClientAddress(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode string) {
		e := startE2E(t, mode, topology.Spec{Clients: 2}, false, topology.ChainOptions{})
		for _, c := range e.topo.Clients {
			want := c.Addr(topology.SegmentFront).String()
			client := e.client(c, clientOptions{})
			for _, url := range []string{"https://" + appName + "/hello", "http://" + appName + "/hello"} {
				got, _ := fetchEcho(t, client, url)
				if ff := forwardedFor(got); ff != want {
					t.Errorf("%s from %s: X-Forwarded-For starts with %q, want the client %s", url, c.Name, ff, want)
				}
				if ip := strings.Join(got.Headers["X-Real-Ip"], ","); ip != want {
					t.Errorf("%s from %s: X-Real-IP = %q, want %s", url, c.Name, ip, want)
				}
				if host, _, _ := net.SplitHostPort(got.RemoteAddr); !isL7Back(e, host) {
					t.Errorf("%s from %s: backend peer %s is not an L7 node", url, c.Name, got.RemoteAddr)
				}
			}
			client.CloseIdleConnections()
		}
	})
}

func isL7Back(e *e2e, host string) bool {
	for _, h := range e.topo.L7 {
		if h.Addr(topology.SegmentBack).String() == host {
			return true
		}
	}
	return false
}

func TestE2EClientAffinity(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode string) {
		opts := topology.ChainOptions{L4: func(_ int, f *config.File) {
			for i := range f.L4.VIPs {
				f.L4.VIPs[i].Affinity = "client"
			}
		}}
		e := startE2E(t, mode, topology.Spec{Clients: 4}, true, opts)
		const connections = 12
		for _, c := range e.topo.Clients {
			client := e.client(c, clientOptions{keepAlive: false})
			seen := map[string]int{}
			for range connections {
				got, _ := fetchEcho(t, client, "https://"+appName+"/affinity")
				seen[got.Backend]++
			}
			if len(seen) != 1 {
				t.Errorf("client %s reached %d L7 nodes over %d connections (%v), want 1", c.Name, len(seen), connections, seen)
			}
		}
	})
}

func TestE2ETLSSNITwoNames(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode string) {
		e := startE2E(t, mode, topology.Spec{}, false, topology.ChainOptions{})
		c := e.topo.Clients[0]
		tests := []struct {
			name       string
			serverName string
			wantCert   string
		}{
			{"app name", appName, appName},
			{"api name", apiName, apiName},
			{"no SNI gets default", "", appName},
			{"unknown name gets default", "other.tidegate.test", appName},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				raw, err := c.DialContext(ctx, "tcp", vipAddr(":443"))
				if err != nil {
					t.Fatal(err)
				}
				defer raw.Close()
				// Verification against the expected name happens below, so
				// no-SNI and unknown-name handshakes can complete.
				conn := tls.Client(raw, &tls.Config{ServerName: tc.serverName, InsecureSkipVerify: true})
				if err := conn.HandshakeContext(ctx); err != nil {
					t.Fatalf("handshake with SNI %q: %v", tc.serverName, err)
				}
				leaf := conn.ConnectionState().PeerCertificates[0]
				if err := leaf.VerifyHostname(tc.wantCert); err != nil {
					t.Errorf("SNI %q: certificate names %v, want %s", tc.serverName, leaf.DNSNames, tc.wantCert)
				}
				if _, err := leaf.Verify(x509.VerifyOptions{Roots: e.chain.CA.Pool, DNSName: tc.wantCert}); err != nil {
					t.Errorf("SNI %q: certificate does not verify: %v", tc.serverName, err)
				}
			})
		}

		// A verified request per name goes through to a backend.
		client := e.client(c, clientOptions{keepAlive: true})
		for _, name := range []string{appName, apiName} {
			got, _ := fetchEcho(t, client, "https://"+name+"/sni")
			if got.Host != name {
				t.Errorf("backend saw Host %q, want %q", got.Host, name)
			}
		}
	})
}

func TestE2EHTTP2(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode string) {
		e := startE2E(t, mode, topology.Spec{}, false, topology.ChainOptions{})
		c := e.topo.Clients[0]
		client := e.client(c, clientOptions{keepAlive: true, http2: true})
		defer client.CloseIdleConnections()

		const streams = 20
		var wg sync.WaitGroup
		errs := make(chan error, streams)
		for i := range streams {
			wg.Go(func() {
				resp, err := client.Get(fmt.Sprintf("https://%s/h2/%d", appName, i))
				if err != nil {
					errs <- err
					return
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				if resp.ProtoMajor != 2 {
					errs <- fmt.Errorf("stream %d: protocol %s, want HTTP/2", i, resp.Proto)
					return
				}
				if resp.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("stream %d: status %s: %s", i, resp.Status, body)
					return
				}
				if !bytes.Contains(body, []byte(c.Addr(topology.SegmentFront).String())) {
					errs <- fmt.Errorf("stream %d: echo reply does not name the client address:\n%s", i, body)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

func TestE2EWebSocket(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode string) {
		var upgradeFor atomic.Value
		wsAddr := netip.AddrPort{}
		opts := topology.ChainOptions{L7: func(_ int, f *config.File) {
			f.L7.Upstreams = append(f.L7.Upstreams, config.Upstream{Name: "ws", Backends: []config.Backend{{Address: wsAddr.String()}}})
			ws := config.Route{Name: "ws", Match: config.RouteMatch{PathPrefix: "/ws"}, Upstream: "ws"}
			f.L7.Routes = append([]config.Route{ws}, f.L7.Routes...)
		}}

		// The WebSocket backend runs in the test process inside backend-0's
		// namespace, started before the chain so the L7 nodes find it.
		e := startE2EWith(t, mode, topology.Spec{}, func(tp *topology.Topology) topology.ChainOptions {
			b := tp.Backends[0]
			wsAddr = netip.AddrPortFrom(b.Addr(topology.SegmentBack), 8081)
			ln, err := b.Listen("tcp", wsAddr.String())
			if err != nil {
				t.Fatal(err)
			}
			up := websocket.Upgrader{}
			srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				upgradeFor.Store(r.Header.Get("X-Forwarded-For"))
				conn, err := up.Upgrade(w, r, nil)
				if err != nil {
					return
				}
				defer conn.Close()
				for {
					kind, msg, err := conn.ReadMessage()
					if err != nil {
						return
					}
					if err := conn.WriteMessage(kind, append([]byte("echo:"), msg...)); err != nil {
						return
					}
				}
			})}
			go func() { _ = srv.Serve(ln) }()
			t.Cleanup(func() { srv.Close() })
			return opts
		})

		c := e.topo.Clients[0]
		dialer := websocket.Dialer{
			NetDialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				return c.DialContext(ctx, "tcp", vipAddr(addr))
			},
			TLSClientConfig:  &tls.Config{RootCAs: e.chain.CA.Pool},
			HandshakeTimeout: 10 * time.Second,
		}
		conn, resp, err := dialer.Dial("wss://"+appName+"/ws/chat", nil)
		if err != nil {
			status := ""
			if resp != nil {
				status = resp.Status
			}
			t.Fatalf("dial wss://%s/ws/chat: %v (response %s)", appName, err, status)
		}
		defer conn.Close()
		for i := range 5 {
			msg := fmt.Sprintf("message %d", i)
			if err := conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
				t.Fatalf("write %q: %v", msg, err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, got, err := conn.ReadMessage()
			if err != nil {
				t.Fatalf("read reply to %q: %v", msg, err)
			}
			if string(got) != "echo:"+msg {
				t.Errorf("reply = %q, want %q", got, "echo:"+msg)
			}
		}
		ff, _ := upgradeFor.Load().(string)
		if first, _, _ := strings.Cut(ff, ","); strings.TrimSpace(first) != c.Addr(topology.SegmentFront).String() {
			t.Errorf("upgrade request X-Forwarded-For = %q, want the client %s first", ff, c.Addr(topology.SegmentFront))
		}
	})
}

// staticBody is the cacheable, compressible response of the content
// backend.
var staticBody = bytes.Repeat([]byte("tidegate serves this line again and again.\n"), 200)

// startContentChain starts a chain whose route "static" (path prefix
// /static, routes[0]) leads to content backends in the test process that
// return staticBody as cacheable text. patches configure the route. It
// returns the chain and the count of requests the content backends served.
func startContentChain(t *testing.T, mode string, patches ...topology.Patch) (*e2e, *atomic.Int64) {
	t.Helper()
	hits := new(atomic.Int64)
	e := startE2EWith(t, mode, topology.Spec{}, func(tp *topology.Topology) topology.ChainOptions {
		var backends []config.Backend
		for _, b := range tp.Backends {
			addr := netip.AddrPortFrom(b.Addr(topology.SegmentBack), 8082)
			ln, err := b.Listen("tcp", addr.String())
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/" {
					return // health check
				}
				hits.Add(1)
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				w.Header().Set("Cache-Control", "public, max-age=300")
				w.Header().Set("ETag", `"static-v1"`)
				_, _ = w.Write(staticBody)
			})}
			go func() { _ = srv.Serve(ln) }()
			t.Cleanup(func() { srv.Close() })
			backends = append(backends, config.Backend{Address: addr.String()})
		}
		return topology.ChainOptions{
			L4: func(_ int, f *config.File) {
				// One client stays on one L7 node, whose cache it fills.
				for i := range f.L4.VIPs {
					f.L4.VIPs[i].Affinity = "client"
				}
			},
			L7: func(_ int, f *config.File) {
				f.L7.Upstreams = append(f.L7.Upstreams, config.Upstream{Name: "static", Backends: backends})
				static := config.Route{Name: "static", Match: config.RouteMatch{PathPrefix: "/static"}, Upstream: "static"}
				f.L7.Routes = append([]config.Route{static}, f.L7.Routes...)
			},
			// Policy and cache keys go in as YAML, so a build whose
			// config types lack them skips with the reason.
			L7Patches: patches,
		}
	})
	return e, hits
}

// Patches that turn on the cache and compression on the "static" route.
var (
	cachePatches = []topology.Patch{
		{Path: "l7", YAML: "cache: {max_size: 16MiB}"},
		{Path: "l7.routes[0]", YAML: "cache: {enabled: true}"},
	}
	compressPatch = topology.Patch{Path: "l7.routes[0]", YAML: "policy: {compress: {min_size: 256}}"}
)

// getStatic sends n GETs for the same static page with Accept-Encoding
// gzip and returns the responses with their raw bodies.
func getStatic(t *testing.T, client *http.Client, n int) ([]*http.Response, [][]byte) {
	t.Helper()
	var resps []*http.Response
	var bodies [][]byte
	for i := range n {
		req, err := http.NewRequest(http.MethodGet, "https://"+appName+"/static/page.txt", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		raw, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("request %d: read body: %v", i, err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: status %s", i, resp.Status)
		}
		resps = append(resps, resp)
		bodies = append(bodies, raw)
	}
	return resps, bodies
}

// checkGzip checks that a response is the gzip-compressed staticBody with
// Vary naming Accept-Encoding.
func checkGzip(t *testing.T, i int, resp *http.Response, raw []byte) {
	t.Helper()
	if vary := strings.ToLower(strings.Join(resp.Header.Values("Vary"), ",")); !strings.Contains(vary, "accept-encoding") {
		t.Errorf("request %d: Vary = %q, want Accept-Encoding in it", i, vary)
	}
	if enc := resp.Header.Get("Content-Encoding"); enc != "gzip" {
		t.Errorf("request %d: Content-Encoding = %q, want gzip", i, enc)
		return
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("request %d: gzip reader: %v", i, err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("request %d: gunzip: %v", i, err)
	}
	if !bytes.Equal(plain, staticBody) {
		t.Errorf("request %d: decompressed body differs from the backend's (%d bytes, want %d)", i, len(plain), len(staticBody))
	}
	if len(raw) >= len(staticBody) {
		t.Errorf("request %d: compressed body is %d bytes, not smaller than %d", i, len(raw), len(staticBody))
	}
}

// checkCached checks that three identical GETs reached the backend once and
// that a repeat was a cache hit.
func checkCached(t *testing.T, hits *atomic.Int64, resps []*http.Response) {
	t.Helper()
	var statuses []string
	for _, r := range resps {
		statuses = append(statuses, r.Header.Get("Cache-Status"))
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("backend served %d requests for %d identical cacheable GETs, want 1 (Cache-Status: %q)", n, len(resps), statuses)
	}
	if !slices.ContainsFunc(statuses[1:], func(s string) bool { return strings.Contains(strings.ToLower(s), "hit") }) {
		t.Errorf("Cache-Status of repeated requests = %q, want a hit", statuses)
	}
}

func TestE2ECacheOnRoute(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode string) {
		e, hits := startContentChain(t, mode, cachePatches...)
		resps, bodies := getStatic(t, e.client(e.topo.Clients[0], clientOptions{keepAlive: true}), 3)
		checkCached(t, hits, resps)
		for i, raw := range bodies {
			if !bytes.Equal(raw, staticBody) {
				t.Errorf("request %d: body differs from the backend's (%d bytes, want %d)", i, len(raw), len(staticBody))
			}
		}
	})
}

func TestE2ECompressionOnRoute(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode string) {
		e, _ := startContentChain(t, mode, compressPatch)
		resps, bodies := getStatic(t, e.client(e.topo.Clients[0], clientOptions{keepAlive: true}), 2)
		for i := range resps {
			checkGzip(t, i, resps[i], bodies[i])
		}
	})
}

// TestE2ECompressionAndCache turns both on for one route: the cache must
// serve the compressed variant again without asking the backend.
func TestE2ECompressionAndCache(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode string) {
		e, hits := startContentChain(t, mode, append(slices.Clone(cachePatches), compressPatch)...)
		resps, bodies := getStatic(t, e.client(e.topo.Clients[0], clientOptions{keepAlive: true}), 3)
		for i := range resps {
			checkGzip(t, i, resps[i], bodies[i])
		}
		checkCached(t, hits, resps)
	})
}

func TestE2ERateLimitPerClient(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode string) {
		const requests, burst = 1, 3
		opts := topology.ChainOptions{
			L4: func(_ int, f *config.File) {
				// Per-client limits stay exact when each client sticks to
				// one L7 node.
				for i := range f.L4.VIPs {
					f.L4.VIPs[i].Affinity = "client"
				}
			},
			L7Patches: []topology.Patch{{
				Path: "l7.routes[0]",
				YAML: fmt.Sprintf("policy: {rate_limit: {requests: %d, per: 1m, burst: %d, key: client}}", requests, burst),
			}},
		}
		e := startE2E(t, mode, topology.Spec{Clients: 2}, false, opts)
		a := e.client(e.topo.Clients[0], clientOptions{keepAlive: true})
		b := e.client(e.topo.Clients[1], clientOptions{keepAlive: true})

		var codes []int
		limited := false
		for range 10 {
			resp, err := a.Get("https://" + appName + "/limited")
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes = append(codes, resp.StatusCode)
			if resp.StatusCode == http.StatusTooManyRequests {
				limited = true
				if resp.Header.Get("Retry-After") == "" {
					t.Errorf("429 without Retry-After")
				}
			} else if limited && resp.StatusCode == http.StatusOK {
				t.Errorf("200 after a 429 within the same minute: %v", codes)
			}
		}
		ok := 0
		for _, c := range codes {
			if c == http.StatusOK {
				ok++
			}
		}
		if !limited {
			t.Errorf("client %s got no 429 in 10 requests: %v", e.topo.Clients[0].Name, codes)
		}
		if ok < 1 || ok > requests+burst {
			t.Errorf("client %s got %d successes, want 1..%d: %v", e.topo.Clients[0].Name, ok, requests+burst, codes)
		}

		// The other client has its own limit.
		resp, err := b.Get("https://" + appName + "/limited")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("client %s after %s was limited: status %d, want 200", e.topo.Clients[1].Name, e.topo.Clients[0].Name, resp.StatusCode)
		}
	})
}

// TestE2EL4NodesAgree sends each client through one L4 node and then the
// other. With client affinity both L4 nodes must pick the same L7 node,
// because every L4 node builds the same Maglev table from the same
// configuration. That agreement lets a router spread a VIP over them.
func TestE2EL4NodesAgree(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode string) {
		opts := topology.ChainOptions{L4: func(_ int, f *config.File) {
			for i := range f.L4.VIPs {
				f.L4.VIPs[i].Affinity = "client"
			}
		}}
		e := startE2E(t, mode, topology.Spec{Clients: 4, L4Nodes: 2}, true, opts)
		vip := netip.PrefixFrom(topology.VIP, 32).String()
		for _, c := range e.topo.Clients {
			picked := map[string]string{} // L4 node to L7 node
			for _, l4 := range e.topo.L4 {
				// Pin the VIP route to one L4 node; the default route
				// spreads over both by hash.
				if _, err := c.Run("ip", "route", "replace", vip, "via", l4.Addr(topology.SegmentFront).String()); err != nil {
					t.Fatal(err)
				}
				client := e.client(c, clientOptions{keepAlive: false})
				for range 4 {
					got, _ := fetchEcho(t, client, "https://"+appName+"/agree")
					if prev, ok := picked[l4.Name]; ok && prev != got.Backend {
						t.Errorf("client %s through %s reached both %s and %s", c.Name, l4.Name, prev, got.Backend)
					}
					picked[l4.Name] = got.Backend
				}
			}
			if picked["l4-0"] != picked["l4-1"] {
				t.Errorf("client %s: l4-0 picked %s, l4-1 picked %s; want the same L7 node", c.Name, picked["l4-0"], picked["l4-1"])
			}
			t.Logf("client %s: both L4 nodes picked %s", c.Name, picked["l4-0"])
		}
		// Each L4 node carried connections, in userspace or in XDP, so the
		// test did use both.
		for _, p := range e.chain.L4 {
			m := scrapeMetrics(t, p)
			accepted := sumSeries(m, "tidegate_l4_connections_accepted_total", `vip="https"`)
			xdpFlows := m["tidegate_l4_xdp_new_flows_total"]
			if accepted+xdpFlows == 0 {
				t.Errorf("%s carried no connection (userspace accepted %g, XDP took %g)", p.Host.Name, accepted, xdpFlows)
			}
		}
	})
}

// TestE2EAutoModeServes runs the L4 in dataplane mode "auto", as the compose
// demo does: it must choose an engine (XDP when it attaches), say which in
// its log and metrics, and serve through it.
func TestE2EAutoModeServes(t *testing.T) {
	e := startE2E(t, "auto", topology.Spec{}, false, topology.ChainOptions{})
	c := e.topo.Clients[0]
	got, _ := fetchEcho(t, e.client(c, clientOptions{}), "https://"+appName+"/auto")
	if ff := forwardedFor(got); ff != c.Addr(topology.SegmentFront).String() {
		t.Errorf("X-Forwarded-For starts with %q, want the client %s", ff, c.Addr(topology.SegmentFront))
	}

	var engines []string
	for series, v := range scrapeMetrics(t, e.chain.L4[0]) {
		if strings.HasPrefix(series, "tidegate_l4_engine_info{") && v == 1 {
			engines = append(engines, series)
		}
	}
	if len(engines) != 1 {
		t.Errorf("tidegate_l4_engine_info has %d engines at 1 (%v), want exactly one", len(engines), engines)
	}
	if n := e.chain.L4[0].CountLines("l4 engine selected"); n != 1 {
		t.Errorf("the L4 logged %d lines about the engine it chose, want 1", n)
	}
	t.Logf("auto mode chose %v", engines)
}
