//go:build integration

package integration

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/tidegate/tidegate/l4/proxyheader"
)

// l4Config returns an L4 configuration with one VIP "web" on vip in front
// of reals, with extra YAML lines added to the VIP.
func l4Config(vip string, reals []string, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "admin:\n  address: {{ADMIN}}\ndrain_timeout: 5s\nl4:\n  vips:\n    - name: web\n      address: %s\n", vip)
	if extra != "" {
		b.WriteString(indent(extra, 6) + "\n")
	}
	b.WriteString("      reals:\n")
	for _, r := range reals {
		fmt.Fprintf(&b, "        - address: %s\n", r)
	}
	return b.String()
}

func nodeAddrs(nodes []*l7Node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.addr
	}
	return out
}

// TestL4ProxyHeaderEveryConnection checks that each connection through the
// real binary starts with a PROXY v2 header carrying the client's address
// and port, the VIP, and a unique ID that the L4 also logs.
func TestL4ProxyHeaderEveryConnection(t *testing.T) {
	nodes := []*l7Node{
		startL7Node(t, "127.0.0.1:0", echoHandler),
		startL7Node(t, "127.0.0.1:0", echoHandler),
	}
	vip := freeAddr(t)
	l4 := startL4(t, l4Config(vip, nodeAddrs(nodes), ""))

	const conns = 40
	ids := map[proxyheader.ID]bool{}
	for i := range conns {
		c := dialEcho(t, vip)
		if err := c.roundTrip(fmt.Sprintf("hello %d", i)); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		n := nodeOf(c, nodes)
		if n < 0 {
			t.Fatalf("no node got a header from client %s", c.LocalAddr())
		}
		id := checkHeader(t, nodes[n].headerFrom(c.LocalAddr().String()), c.LocalAddr().String(), vip)
		if ids[id] {
			t.Errorf("unique ID %s sent twice", id)
		}
		ids[id] = true
		c.Close()
	}
	if got := nodes[0].headerCount() + nodes[1].headerCount(); got != conns {
		t.Errorf("nodes got %d headers for %d connections", got, conns)
	}
	if nodes[0].headerCount() == 0 || nodes[1].headerCount() == 0 {
		t.Errorf("connections split %d/%d, want both nodes used", nodes[0].headerCount(), nodes[1].headerCount())
	}

	// The L4 logs each ID when the connection closes.
	for id := range ids {
		waitUntil(t, 5*time.Second, "conn_id "+id.String()+" in the L4 log", func() bool {
			return strings.Contains(l4.out.String(), "conn_id="+id.String())
		})
	}
}

// TestL4LargeTransferHashes sends 100 MiB each way at once through the real
// binary and checks both with SHA-256. It also checks the half-close order.
// The node sends the hash of what it got only after the client's FIN, and
// the client reads EOF only after that hash.
func TestL4LargeTransferHashes(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 200 MiB; skipped with -short")
	}
	const size = 100 << 20
	node := startL7Node(t, "127.0.0.1:0", func(c *net.TCPConn, r *bufio.Reader) {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = io.Copy(c, io.LimitReader(rand.NewChaCha8([32]byte{2}), size))
		}()
		h := sha256.New()
		if _, err := io.Copy(h, r); err != nil {
			t.Errorf("node: read upload: %v", err)
			return
		}
		wg.Wait()
		_, _ = c.Write(h.Sum(nil))
		_ = c.CloseWrite()
	})
	vip := freeAddr(t)
	startL4(t, l4Config(vip, []string{node.addr}, ""))

	c := dialEcho(t, vip)
	_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
	sent := sha256.New()
	go func() {
		_, _ = io.Copy(c, io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{1}), size), sent))
		_ = c.CloseWrite()
	}()

	got := sha256.New()
	n, err := io.Copy(got, io.LimitReader(c.r, size))
	if err != nil || n != size {
		t.Fatalf("download: %d bytes, %v; want %d", n, err, size)
	}
	want := sha256.New()
	_, _ = io.Copy(want, io.LimitReader(rand.NewChaCha8([32]byte{2}), size))
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Error("downloaded 100 MiB differ from what the node sent")
	}

	trailer, err := io.ReadAll(c.r)
	if err != nil {
		t.Fatalf("read trailer: %v", err)
	}
	if len(trailer) != sha256.Size {
		t.Fatalf("trailer after the download is %d bytes, want a %d-byte hash then EOF", len(trailer), sha256.Size)
	}
	if !bytes.Equal(trailer, sent.Sum(nil)) {
		t.Error("node's hash of the upload differs from the client's")
	}
	checkHeader(t, node.headerFrom(c.LocalAddr().String()), c.LocalAddr().String(), vip)
}

// TestL4NodeKilledMidRun kills one of three nodes while connections are open
// and checks health, placement, survivors' connections and recovery.
func TestL4NodeKilledMidRun(t *testing.T) {
	nodes := []*l7Node{
		startL7Node(t, "127.0.0.1:0", echoHandler),
		startL7Node(t, "127.0.0.1:0", echoHandler),
		startL7Node(t, "127.0.0.1:0", echoHandler),
	}
	vip := freeAddr(t)
	// A killed node refuses at once, so the probe timeout only matters for
	// the live nodes. It is as long as the interval allows, because on a
	// loaded machine a shorter one expired before the prober ran and
	// marked live nodes down too.
	l4 := startL4(t, l4Config(vip, nodeAddrs(nodes),
		"health_check: {type: tcp, interval: 250ms, timeout: 250ms, rise: 2, fall: 2}"))

	var open []*echoConn
	perNode := make([]int, 3)
	for i := 0; i < 60; i++ {
		c := dialEcho(t, vip)
		if err := c.roundTrip("open"); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		open = append(open, c)
		perNode[nodeOf(c, nodes)]++
	}
	for i, n := range perNode {
		if n == 0 {
			t.Fatalf("node %d got no connection of 60: %v", i, perNode)
		}
	}

	const victim = 1
	victimAddr := nodes[victim].addr
	nodes[victim].kill()
	// GET /vips reads health under the lock that the health change holds
	// until the new table is published, so from here on new connections
	// avoid the killed node.
	waitUntil(t, 10*time.Second, "killed node marked down", func() bool {
		return !l4.realHealthy(t, "web", victimAddr)
	})
	// The log line reaches the test through a pipe, after the health
	// change.
	waitUntil(t, 10*time.Second, "\"real marked down\" line in the L4 log", func() bool {
		return strings.Contains(l4.out.String(), "real marked down")
	})
	failuresAtDown := l4.metric(t, fmt.Sprintf(`tidegate_l4_real_dial_failures_total{real=%q,vip="web"}`, victimAddr))

	// Connections on the survivors are unaffected.
	for i, c := range open {
		n := nodeOf(c, nodes)
		if n == victim {
			continue
		}
		if err := c.roundTrip("still open"); err != nil {
			t.Errorf("connection %d on surviving node %d broke: %v", i, n, err)
		}
	}

	// New connections go only to the survivors and all succeed.
	before := []int{nodes[0].headerCount(), nodes[1].headerCount(), nodes[2].headerCount()}
	for i := range 60 {
		c := dialEcho(t, vip)
		if err := c.roundTrip("new"); err != nil {
			t.Fatalf("new connection %d after the kill: %v", i, err)
		}
		c.Close()
	}
	if nodes[victim].headerCount() != before[victim] {
		t.Errorf("killed node got new connections")
	}
	if got := nodes[0].headerCount() - before[0] + nodes[2].headerCount() - before[2]; got != 60 {
		t.Errorf("survivors got %d of 60 new connections", got)
	}
	after := l4.metric(t, fmt.Sprintf(`tidegate_l4_real_dial_failures_total{real=%q,vip="web"}`, victimAddr))
	if after != failuresAtDown {
		t.Errorf("L4 dialed the down node %v more times after marking it down", after-failuresAtDown)
	}

	// The node comes back and is used again.
	nodes[victim].restart(t)
	waitUntil(t, 10*time.Second, "restarted node marked up", func() bool {
		return l4.realHealthy(t, "web", victimAddr)
	})
	before[victim] = nodes[victim].headerCount()
	for range 60 {
		c := dialEcho(t, vip)
		if err := c.roundTrip("back"); err != nil {
			t.Fatalf("connection after recovery: %v", err)
		}
		c.Close()
	}
	if nodes[victim].headerCount() == before[victim] {
		t.Error("restarted node got none of 60 new connections")
	}
}

// TestL4DrainThroughAdmin sets a real's weight to 0 at run time: its open
// connections stay, new ones go elsewhere, and weight 1 brings it back.
func TestL4DrainThroughAdmin(t *testing.T) {
	nodes := []*l7Node{
		startL7Node(t, "127.0.0.1:0", echoHandler),
		startL7Node(t, "127.0.0.1:0", echoHandler),
	}
	vip := freeAddr(t)
	l4 := startL4(t, l4Config(vip, nodeAddrs(nodes), ""))

	var onDrained []*echoConn
	for len(onDrained) < 5 {
		c := dialEcho(t, vip)
		if err := c.roundTrip("open"); err != nil {
			t.Fatal(err)
		}
		if nodeOf(c, nodes) == 0 {
			onDrained = append(onDrained, c)
		} else {
			c.Close()
		}
	}

	if code := l4.setWeight(t, "web", nodes[0].addr, 0); code != 200 {
		t.Fatalf("set weight 0: status %d", code)
	}
	if code := l4.setWeight(t, "web", "127.0.0.1:1", 0); code != 404 {
		t.Errorf("set weight of an unknown real: status %d, want 404", code)
	}
	for _, v := range l4.vips(t) {
		if v.Reals[0].Weight != 0 {
			t.Errorf("/vips shows weight %d for the drained real", v.Reals[0].Weight)
		}
	}

	before := nodes[0].headerCount()
	for range 50 {
		c := dialEcho(t, vip)
		if err := c.roundTrip("new"); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if got := nodes[0].headerCount() - before; got != 0 {
		t.Errorf("drained real got %d new connections", got)
	}
	for i, c := range onDrained {
		if err := c.roundTrip("still here"); err != nil {
			t.Errorf("open connection %d on the drained real broke: %v", i, err)
		}
	}
	if got := l4.metric(t, fmt.Sprintf(`tidegate_l4_real_connections_active{real=%q,vip="web"}`, nodes[0].addr)); got != 5 {
		t.Errorf("active connections on the drained real = %v, want 5", got)
	}

	if code := l4.setWeight(t, "web", nodes[0].addr, 1); code != 200 {
		t.Fatalf("set weight 1: status %d", code)
	}
	before = nodes[0].headerCount()
	for range 50 {
		c := dialEcho(t, vip)
		_ = c.roundTrip("again")
		c.Close()
	}
	if nodes[0].headerCount() == before {
		t.Error("real got no connections after its weight was restored")
	}
}

// TestL4ReloadKeepsConnections reloads with SIGHUP: a new real is added, an
// invalid file is rejected, and connections on unchanged reals survive both.
func TestL4ReloadKeepsConnections(t *testing.T) {
	nodes := []*l7Node{
		startL7Node(t, "127.0.0.1:0", echoHandler),
		startL7Node(t, "127.0.0.1:0", echoHandler),
	}
	third := startL7Node(t, "127.0.0.1:0", echoHandler)
	vip := freeAddr(t)
	l4 := startL4(t, l4Config(vip, nodeAddrs(nodes), ""))

	var open []*echoConn
	for range 10 {
		c := dialEcho(t, vip)
		if err := c.roundTrip("open"); err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}

	reload := func(cfg string) {
		t.Helper()
		writeFile(t, "", l4.config, strings.ReplaceAll(cfg, "{{ADMIN}}", l4.admin))
		if err := l4.signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}

	reload("l4: {vips: []}\n")
	waitUntil(t, 5*time.Second, "invalid reload rejected", func() bool {
		return strings.Contains(l4.out.String(), "reload rejected")
	})

	reload(l4Config(vip, append(nodeAddrs(nodes), third.addr), ""))
	waitUntil(t, 5*time.Second, "reload applied", func() bool {
		return strings.Contains(l4.out.String(), "config reloaded")
	})
	for i, c := range open {
		if err := c.roundTrip("after reload"); err != nil {
			t.Errorf("connection %d broke across reloads: %v", i, err)
		}
	}
	for range 60 {
		c := dialEcho(t, vip)
		if err := c.roundTrip("new"); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if third.headerCount() == 0 {
		t.Error("real added by reload got none of 60 new connections")
	}
	if l4.exited() {
		t.Fatal("L4 exited during reloads")
	}
}

// TestL4ConnectionLimit checks that connections over max_connections are
// closed at once and counted while the open ones keep working.
func TestL4ConnectionLimit(t *testing.T) {
	node := startL7Node(t, "127.0.0.1:0", echoHandler)
	vip := freeAddr(t)
	l4 := startL4(t, l4Config(vip, []string{node.addr}, "max_connections: 3"))

	var open []*echoConn
	for range 3 {
		c := dialEcho(t, vip)
		if err := c.roundTrip("open"); err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	for range 5 {
		c, err := net.DialTimeout("tcp", vip, 5*time.Second)
		if err != nil {
			continue // the reset can already fail the connect
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if got, _ := io.ReadAll(c); len(got) != 0 {
			t.Errorf("connection over the limit received %q", got)
		}
		c.Close()
	}
	waitUntil(t, 5*time.Second, "5 rejections counted", func() bool {
		return l4.metric(t, `tidegate_l4_connections_rejected_total{reason="limit",vip="web"}`) == 5
	})
	for i, c := range open {
		if err := c.roundTrip("still open"); err != nil {
			t.Errorf("connection %d under the limit broke: %v", i, err)
		}
	}
}

// TestL4AcceptBackoffOnEMFILE runs the L4 with a low open-file limit so
// accept fails with EMFILE, and checks that it logs, backs off, and serves
// again once connections close.
func TestL4AcceptBackoffOnEMFILE(t *testing.T) {
	node := startL7Node(t, "127.0.0.1:0", echoHandler)
	vip := freeAddr(t)
	admin := freeAddr(t)
	path := writeFile(t, t.TempDir(), "l4.yaml", strings.ReplaceAll(l4Config(vip, []string{node.addr}, ""), "{{ADMIN}}", admin))
	// The Go runtime, listeners and logs take about 10 descriptors; 40 leaves
	// room for a few proxied connections (two descriptors each).
	p := startCommand(t, "tidegate l4 (nofile 40)", execCommand("prlimit", "--nofile=40:40", tidegateBin, "l4", "--config", path))
	waitReady(t, admin)

	var conns []net.Conn
	for range 60 {
		c, err := net.DialTimeout("tcp", vip, 2*time.Second)
		if err != nil {
			break
		}
		conns = append(conns, c)
	}
	waitUntil(t, 10*time.Second, "accept error logged", func() bool {
		return strings.Contains(p.out.String(), "accept failed, retrying")
	})
	for _, c := range conns {
		c.Close()
	}
	if p.exited() {
		t.Fatal("L4 exited on EMFILE")
	}

	// Once descriptors are free again, new connections are served.
	waitUntil(t, 15*time.Second, "service after EMFILE", func() bool {
		c, err := net.DialTimeout("tcp", vip, time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		ec := &echoConn{TCPConn: c.(*net.TCPConn), r: bufio.NewReader(c)}
		return ec.roundTrip("ok") == nil
	})
	lines := strings.Count(p.out.String(), "accept failed, retrying")
	t.Logf("%d accept-failure log lines", lines)
}

// TestL4TwoVIPsIPv4AndIPv6 runs an IPv4 VIP with PROXY v2 and an IPv6 VIP
// with PROXY v1 and client affinity in one process.
func TestL4TwoVIPsIPv4AndIPv6(t *testing.T) {
	v4Nodes := []*l7Node{startL7Node(t, "127.0.0.1:0", echoHandler), startL7Node(t, "127.0.0.1:0", echoHandler)}
	v6Nodes := []*l7Node{
		startL7Node(t, "[::1]:0", echoHandler),
		startL7Node(t, "[::1]:0", echoHandler),
		startL7Node(t, "[::1]:0", echoHandler),
	}
	vip4 := freeAddr(t)
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	vip6 := ln.Addr().String()
	ln.Close()

	cfg := fmt.Sprintf("admin:\n  address: {{ADMIN}}\nl4:\n  vips:\n"+
		"    - name: v4\n      address: %s\n      reals: [{address: %q}, {address: %q}]\n"+
		"    - name: v6\n      address: %q\n      proxy_protocol: v1\n      affinity: client\n"+
		"      reals: [{address: %q}, {address: %q}, {address: %q}]\n",
		vip4, v4Nodes[0].addr, v4Nodes[1].addr, vip6, v6Nodes[0].addr, v6Nodes[1].addr, v6Nodes[2].addr)
	startL4(t, cfg)

	c4 := dialEcho(t, vip4)
	if err := c4.roundTrip("v4"); err != nil {
		t.Fatal(err)
	}
	n := nodeOf(c4, v4Nodes)
	if n < 0 {
		t.Fatal("no IPv4 node got the connection")
	}
	checkHeader(t, v4Nodes[n].headerFrom(c4.LocalAddr().String()), c4.LocalAddr().String(), vip4)

	// Every connection from ::1 lands on one node, because of affinity.
	first := -1
	for i := range 20 {
		c := dialEcho(t, vip6)
		if err := c.roundTrip("v6"); err != nil {
			t.Fatal(err)
		}
		n := nodeOf(c, v6Nodes)
		if n < 0 {
			t.Fatalf("connection %d: no IPv6 node got a header from %s", i, c.LocalAddr())
		}
		if first < 0 {
			first = n
		} else if n != first {
			t.Fatalf("connection %d from ::1 reached node %d, earlier ones node %d", i, n, first)
		}
		h := v6Nodes[n].headerFrom(c.LocalAddr().String())
		if h.Version != 1 {
			t.Errorf("IPv6 VIP sent PROXY v%d, want v1", h.Version)
		}
		if h.DestinationAddr.String() != vip6 {
			t.Errorf("v1 header destination = %s, want %s", h.DestinationAddr, vip6)
		}
		c.Close()
	}
	if v4Nodes[0].headerCount()+v4Nodes[1].headerCount() != 1 {
		t.Error("IPv6 connections reached the IPv4 VIP's nodes")
	}
}

// TestL4SigtermDrains sends SIGTERM with a connection open: the VIP stops
// accepting, the open connection keeps working, and the process exits once
// it closes.
func TestL4SigtermDrains(t *testing.T) {
	node := startL7Node(t, "127.0.0.1:0", echoHandler)
	vip := freeAddr(t)
	l4 := startL4(t, l4Config(vip, []string{node.addr}, ""))
	c := dialEcho(t, vip)
	if err := c.roundTrip("before"); err != nil {
		t.Fatal(err)
	}

	if err := l4.signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "VIP listener closed", func() bool {
		nc, err := net.DialTimeout("tcp", vip, time.Second)
		if err != nil {
			return true
		}
		nc.Close()
		return false
	})
	if err := c.roundTrip("during drain"); err != nil {
		t.Fatalf("open connection broke during drain: %v", err)
	}
	if l4.exited() {
		t.Fatal("L4 exited with a connection still open")
	}
	c.Close()
	if !l4.wait(5 * time.Second) {
		t.Fatal("L4 did not exit after its last connection closed")
	}
	if l4.err != nil {
		t.Errorf("L4 exit: %v", l4.err)
	}
}

// readyzServer is an L7 admin listener stand-in that serves GET /readyz
// with status 200 or 503 behind a required PROXY header.
type readyzServer struct {
	addr    string
	ready   atomic.Bool
	proxied atomic.Int64 // requests that came with a PROXY header
}

func startReadyz(t *testing.T) *readyzServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &readyzServer{addr: ln.Addr().String()}
	s.ready.Store(true)
	pln := &proxyproto.Listener{
		Listener:          ln,
		ConnPolicy:        func(proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil },
		ReadHeaderTimeout: time.Second,
	}
	srv := &http.Server{
		ReadHeaderTimeout: time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.proxied.Add(1)
			if r.URL.Path != "/readyz" || !s.ready.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			w.WriteHeader(http.StatusOK)
		}),
	}
	go func() { _ = srv.Serve(pln) }()
	t.Cleanup(func() { srv.Close() })
	return s
}

// TestL4ReadyzDrainStopsNewConnections has one L7 turn /readyz to 503, as
// an L7 does on SIGTERM: the L4 marks it down through the HTTP check (sent
// with a PROXY header), sends it no new connections and keeps its open ones.
func TestL4ReadyzDrainStopsNewConnections(t *testing.T) {
	nodes := []*l7Node{startL7Node(t, "127.0.0.1:0", echoHandler), startL7Node(t, "127.0.0.1:0", echoHandler)}
	checks := []*readyzServer{startReadyz(t), startReadyz(t)}
	vip := freeAddr(t)
	cfg := fmt.Sprintf("admin:\n  address: {{ADMIN}}\nl4:\n  vips:\n    - name: web\n      address: %s\n"+
		"      health_check: {type: http, path: /readyz, proxy_protocol: true, interval: 250ms, timeout: 250ms, rise: 2, fall: 2}\n"+
		"      reals:\n        - {address: %q, health_address: %q}\n        - {address: %q, health_address: %q}\n",
		vip, nodes[0].addr, checks[0].addr, nodes[1].addr, checks[1].addr)
	l4 := startL4(t, cfg)

	var onFirst *echoConn
	for onFirst == nil {
		c := dialEcho(t, vip)
		if err := c.roundTrip("open"); err != nil {
			t.Fatal(err)
		}
		if nodeOf(c, nodes) == 0 {
			onFirst = c
		} else {
			c.Close()
		}
	}
	waitUntil(t, 5*time.Second, "health checks with a PROXY header", func() bool {
		return checks[0].proxied.Load() >= 2 && checks[1].proxied.Load() >= 2
	})

	checks[0].ready.Store(false)
	waitUntil(t, 3*time.Second, "draining L7 marked down", func() bool {
		return !l4.realHealthy(t, "web", nodes[0].addr)
	})
	before := nodes[0].headerCount()
	for range 40 {
		c := dialEcho(t, vip)
		if err := c.roundTrip("new"); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if got := nodes[0].headerCount() - before; got != 0 {
		t.Errorf("draining L7 got %d new connections", got)
	}
	if err := onFirst.roundTrip("still open"); err != nil {
		t.Errorf("open connection to the draining L7 broke: %v", err)
	}
	if !strings.Contains(l4.out.String(), "status 503") {
		t.Error("L4 log does not give the 503 as the reason the real went down")
	}
}
