//go:build integration && linux

package integration

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tidegate/tidegate/l4/maglev"
	"github.com/tidegate/tidegate/l4/xdp"
	"github.com/tidegate/tidegate/l4/xdp/xdptest"
)

const (
	vipHost  = "10.201.0.10"
	snatHost = "10.201.9.1"
	l7aHost  = "10.201.1.2"
	l7bHost  = "10.201.2.2"
)

// xdpNet is the test topology:
//
//	client ns (10.201.0.2) ── L4 ns (VIP 10.201.0.10, SNAT 10.201.9.1) ─┬─ L7 a (10.201.1.2)
//	                                                                     └─ L7 b (10.201.2.2)
//
// The L4 runs the XDP balancer in native mode on its three veths and a
// userspace proxy on VIP:80 for connections the program passes to the
// kernel. Every veth peer runs an XDP program, because native XDP on a veth
// delivers redirected frames only then; the L7 peers run the one-time drop.
type xdpNet struct {
	prefix            string // of the namespace names
	generic           bool   // attach the dataplane in generic mode
	cli, l4, l7a, l7b netns.NsHandle
	pinDir            string
	dp                *xdp.Dataplane
	progs             *xdptest.Programs
	nodes             [2]*xdpNode
	userspace         *xdpUserspaceProxy
}

var l4Ifaces = []string{"tgxl4c", "tgxl4a", "tgxl4b"}

// newXDPNet builds the topology. With withDataplane, the test process
// itself opens the XDP dataplane in the L4 namespace.
func newXDPNet(t *testing.T, withDataplane bool) *xdpNet {
	t.Helper()
	requirePrivileged(t)

	prefix := fmt.Sprintf("tgx-%d-", os.Getpid())
	n := &xdpNet{
		prefix: prefix,
		cli:    newNamedNS(t, prefix+"cli"),
		l4:     newNamedNS(t, prefix+"l4"),
		l7a:    newNamedNS(t, prefix+"l7a"),
		l7b:    newNamedNS(t, prefix+"l7b"),
	}
	vethPair(t, n.cli, "tgxc", "10.201.0.2/24", n.l4, "tgxl4c", "10.201.0.1/24")
	vethPair(t, n.l7a, "tgxa", l7aHost+"/24", n.l4, "tgxl4a", "10.201.1.1/24")
	vethPair(t, n.l7b, "tgxb", l7bHost+"/24", n.l4, "tgxl4b", "10.201.2.1/24")
	addAddr(t, n.l4, "tgxl4c", vipHost+"/32")
	addAddr(t, n.l4, "lo", snatHost+"/32")
	for _, ns := range []netns.NsHandle{n.cli, n.l7a, n.l7b} {
		loopbackUp(t, ns)
	}
	defaultRoute(t, n.cli, "10.201.0.1")
	defaultRoute(t, n.l7a, "10.201.1.1")
	defaultRoute(t, n.l7b, "10.201.2.1")
	if err := writeSysctl(n.l4, "net/ipv4/conf/all/forwarding", "1"); err != nil {
		t.Fatal(err)
	}

	// Native XDP on veth drops checksum offload, so every sender must
	// compute full checksums itself.
	for ns, dev := range map[string]string{"cli": "tgxc", "l7a": "tgxa", "l7b": "tgxb"} {
		nsExec(t, prefix+ns, "ethtool", "-K", dev, "tx", "off")
	}
	for _, dev := range l4Ifaces {
		nsExec(t, prefix+"l4", "ethtool", "-K", dev, "tx", "off")
	}

	progs, err := xdptest.Load()
	if err != nil {
		t.Fatal(err)
	}
	n.progs = progs
	t.Cleanup(func() { progs.Close() })
	attach := func(ns netns.NsHandle, dev string, drop bool) {
		idx := ifindexIn(t, ns, dev)
		err := inNS(ns, func() error {
			if drop {
				return progs.AttachDropOnce(idx)
			}
			return progs.AttachPass(idx)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	attach(n.cli, "tgxc", false)
	attach(n.l7a, "tgxa", true)
	attach(n.l7b, "tgxb", true)

	trusted := []string{snatHost, "10.201.1.1", "10.201.2.1"}
	n.nodes[0] = startXDPNode(t, n.l7a, "l7a", trusted)
	n.nodes[1] = startXDPNode(t, n.l7b, "l7b", trusted)
	if withDataplane {
		n.userspace = startXDPUserspaceProxy(t, n.l4, vipHost+":80", l7aHost+":8080")
	}

	n.pinDir = mountBPFFS(t) + "/tidegate"
	if withDataplane {
		n.open(t)
		t.Cleanup(func() {
			if n.dp != nil {
				n.dp.Close(true)
			}
		})
	}
	t.Cleanup(func() {
		for _, node := range n.nodes {
			select {
			case err := <-node.errs:
				t.Errorf("L7 node: %v", err)
			default:
			}
		}
	})
	return n
}

// open starts the dataplane in the L4 namespace and sets the VIPs.
func (n *xdpNet) open(t *testing.T) {
	t.Helper()
	cfg := xdp.Config{
		Interfaces:     l4Ifaces,
		Generic:        n.generic,
		SNATAddr:       netip.MustParseAddr(snatHost),
		PortMin:        20000,
		PortMax:        29999,
		FlowTableSize:  8192,
		MaxVIPs:        4,
		PinPath:        n.pinDir,
		ClosingTimeout: 5 * time.Second,
		SweepInterval:  time.Second,
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	err := inNS(n.l4, func() error {
		var err error
		n.dp, err = xdp.Open(cfg, logger, nil)
		return err
	})
	if err != nil {
		t.Fatalf("open dataplane: %v", err)
	}

	for _, port := range []uint16{80, 81, 82} {
		rport := 8000 + port
		reals := []netip.AddrPort{
			netip.MustParseAddrPort(fmt.Sprintf("%s:%d", l7aHost, rport)),
			netip.MustParseAddrPort(fmt.Sprintf("%s:%d", l7bHost, rport)),
		}
		table, err := maglev.New([]maglev.Backend{{ID: reals[0].String(), Weight: 1}, {ID: reals[1].String(), Weight: 1}}, maglev.DefaultSize)
		if err != nil {
			t.Fatal(err)
		}
		vip := netip.AddrPortFrom(netip.MustParseAddr(vipHost), port)
		if err := n.dp.SetVIP(vip, reals, table, false); err != nil {
			t.Fatalf("SetVIP %s: %v", vip, err)
		}
	}
}

func (n *xdpNet) stats(t *testing.T) map[string]uint64 {
	t.Helper()
	s, err := n.dp.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (n *xdpNet) dial(t *testing.T, port uint16) *net.TCPConn {
	t.Helper()
	c, err := dialIn(n.cli, netip.AddrPortFrom(netip.MustParseAddr(vipHost), port))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	t.Cleanup(func() { c.Close() })
	return c
}

// reply parses "<fields...> <client> <uid> <node>" and checks that the L7
// saw the client's own address and a 16-byte unique ID.
func xdpCheckReply(t *testing.T, c net.Conn, line string, fields int) []string {
	t.Helper()
	f := strings.Fields(line)
	if len(f) != fields {
		t.Fatalf("reply %q has %d fields, want %d", line, len(f), fields)
	}
	client, uid := f[fields-3], f[fields-2]
	if client != c.LocalAddr().String() {
		t.Errorf("L7 saw client %s, want the client's address %s", client, c.LocalAddr())
	}
	if len(uid) != 32 {
		t.Errorf("unique ID %q is not 16 bytes of hex", uid)
	}
	return f
}

func xdpUpload(t *testing.T, c *net.TCPConn, size int64, seed uint64) []string {
	t.Helper()
	h := sha256.New()
	go func() {
		w := bufio.NewWriterSize(c, 64<<10)
		fmt.Fprintf(w, "UP %d\n", size)
		io.CopyN(io.MultiWriter(w, h), xdpStream(seed), size)
		w.Flush()
	}()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read upload reply: %v", err)
	}
	f := xdpCheckReply(t, c, line, 4)
	if want := fmt.Sprintf("%x", h.Sum(nil)); f[0] != want {
		t.Errorf("L7 hashed the upload to %s, want %s", f[0], want)
	}
	return f
}

func xdpDownload(t *testing.T, c *net.TCPConn, size int64, seed uint64, midway func()) {
	t.Helper()
	if _, err := fmt.Fprintf(c, "DOWN %d %d\n", size, seed); err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, err := io.CopyN(got, c, size/10)
	if err == nil && midway != nil {
		midway()
	}
	if err == nil {
		var m int64
		m, err = io.CopyN(got, c, size-size/10)
		n += m
	}
	if err != nil {
		t.Fatalf("download stopped after %d of %d bytes: %v", n, size, err)
	}
	want := sha256.New()
	io.CopyN(want, xdpStream(seed), size)
	if string(got.Sum(nil)) != string(want.Sum(nil)) {
		t.Errorf("downloaded bytes differ from what the L7 sent")
	}
}

func xdpWho(t *testing.T, c *net.TCPConn) []string {
	t.Helper()
	if _, err := io.WriteString(c, "WHO\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read WHO reply: %v", err)
	}
	return xdpCheckReply(t, c, line, 3)
}

func TestXDPPath(t *testing.T) {
	n := newXDPNet(t, true)
	const big = 50 << 20

	t.Run("managed neighbours for reals", func(t *testing.T) {
		h, err := netlink.NewHandleAt(n.l4)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		neighs, err := h.NeighList(0, unix.AF_INET)
		if err != nil {
			t.Fatal(err)
		}
		for _, real := range []string{l7aHost, l7bHost} {
			found := false
			for _, nb := range neighs {
				if nb.IP.String() == real && nb.FlagsExt&netlink.NTF_EXT_MANAGED != 0 {
					found = true
				}
			}
			if !found {
				t.Errorf("no managed neighbour entry for real %s in the L4 namespace", real)
			}
		}
	})

	t.Run("upload 50 MiB", func(t *testing.T) {
		before := n.stats(t)
		start := time.Now()
		xdpUpload(t, n.dial(t, 80), big, 1)
		t.Logf("50 MiB upload through XDP took %s (includes hashing on both ends)", time.Since(start))
		after := n.stats(t)
		if after["new_flows"] != before["new_flows"]+1 {
			t.Errorf("new_flows went from %d to %d, want one XDP flow", before["new_flows"], after["new_flows"])
		}
	})

	t.Run("download 50 MiB", func(t *testing.T) {
		xdpDownload(t, n.dial(t, 80), big, 2, nil)
	})

	t.Run("HTTP sees client address", func(t *testing.T) {
		var local net.Addr
		tr := &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			c, err := dialIn(n.cli, netip.MustParseAddrPort(addr))
			if err == nil {
				local = c.LocalAddr()
			}
			return c, err
		}}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Get("http://" + vipHost + ":82/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		f := strings.Fields(string(body))
		if len(f) != 2 || f[0] != local.String() {
			t.Errorf("backend saw %q, want the client address %s", body, local)
		}
	})

	t.Run("server-first protocol", func(t *testing.T) {
		c := n.dial(t, 81)
		br := bufio.NewReader(c)
		banner, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(banner, "BANNER ") {
			t.Fatalf("banner %q, %v", banner, err)
		}
		io.WriteString(c, "PING\n")
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		xdpCheckReply(t, c, line, 3)
	})

	t.Run("no timestamps or SACK", func(t *testing.T) {
		for _, k := range []string{"net/ipv4/tcp_timestamps", "net/ipv4/tcp_sack"} {
			if err := writeSysctl(n.cli, k, "0"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { writeSysctl(n.cli, k, "1") })
		}
		xdpUpload(t, n.dial(t, 80), 8<<20, 3)
		xdpDownload(t, n.dial(t, 80), 8<<20, 4, nil)
	})

	t.Run("lost handshake ACK", func(t *testing.T) {
		before, _ := n.progs.Dropped()
		// After the program inserts the header, the handshake ACK is a
		// segment whose payload is exactly the header.
		if err := n.progs.DropNext(1, 8080, xdp.HeaderLen, xdp.HeaderLen); err != nil {
			t.Fatal(err)
		}
		c := n.dial(t, 80)
		xdpWho(t, c)
		if after, _ := n.progs.Dropped(); after != before+1 {
			t.Errorf("drop program dropped %d frames, want 1", after-before)
		}
	})

	t.Run("server-first with lost handshake ACK", func(t *testing.T) {
		// The client sends nothing before the banner, so after the drop
		// the header can only come with the client's next pure ACK,
		// which answers the real's retransmitted SYN-ACK.
		before, _ := n.progs.Dropped()
		if err := n.progs.DropNext(1, 8081, xdp.HeaderLen, xdp.HeaderLen); err != nil {
			t.Fatal(err)
		}
		c := n.dial(t, 81)
		br := bufio.NewReader(c)
		banner, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(banner, "BANNER ") {
			t.Fatalf("banner %q, %v", banner, err)
		}
		io.WriteString(c, "PING\n")
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		xdpCheckReply(t, c, line, 3)
		if after, _ := n.progs.Dropped(); after != before+1 {
			t.Errorf("drop program dropped %d frames, want 1", after-before)
		}
	})

	t.Run("lost first data segment", func(t *testing.T) {
		before, _ := n.progs.Dropped()
		if err := n.progs.DropNext(1, 8080, xdp.HeaderLen+1, 65535); err != nil {
			t.Fatal(err)
		}
		c := n.dial(t, 80)
		xdpUpload(t, c, 256<<10, 5)
		xdpWho(t, c)
		if after, _ := n.progs.Dropped(); after != before+1 {
			t.Errorf("drop program dropped %d frames, want 1", after-before)
		}
	})

	t.Run("1000 concurrent connections", func(t *testing.T) {
		const conns = 1000
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			perNode = map[string]int{}
			failed  []error
			release = make(chan struct{})
		)
		for i := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := dialIn(n.cli, netip.MustParseAddrPort(vipHost+":80"))
				if err == nil {
					defer c.Close()
					c.SetDeadline(time.Now().Add(time.Minute))
					_, err = io.WriteString(c, "WHO\n")
				}
				var line string
				if err == nil {
					line, err = bufio.NewReader(c).ReadString('\n')
				}
				mu.Lock()
				if err != nil {
					failed = append(failed, fmt.Errorf("connection %d: %w", i, err))
				} else if f := strings.Fields(line); len(f) == 3 && f[0] == c.LocalAddr().String() {
					perNode[f[2]]++
				} else {
					failed = append(failed, fmt.Errorf("connection %d: reply %q", i, line))
				}
				mu.Unlock()
				if err == nil {
					// Hold the connection until all are open, so
					// that they are concurrent.
					<-release
				}
			}()
		}
		// Wait until every goroutine has its reply, then release.
		deadline := time.Now().Add(2 * time.Minute)
		for {
			mu.Lock()
			done := len(failed) + perNode["l7a"] + perNode["l7b"]
			mu.Unlock()
			if done == conns || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		res, err := n.dp.Sweep()
		if err != nil {
			t.Fatal(err)
		}
		close(release)
		wg.Wait()

		if len(failed) > 0 {
			t.Errorf("%d of %d connections failed, first: %v", len(failed), conns, failed[0])
		}
		if perNode["l7a"] == 0 || perNode["l7b"] == 0 {
			t.Errorf("connections per L7 node = %v, want both used", perNode)
		}
		if res.Flows < conns {
			t.Errorf("XDP flow table held %d live flows, want at least %d", res.Flows, conns)
		}
		t.Logf("connections per L7 node: %v", perNode)
	})

	t.Run("restart mid-transfer", func(t *testing.T) {
		c := n.dial(t, 80)
		xdpDownload(t, c, big, 6, func() {
			if err := n.dp.Close(false); err != nil {
				t.Errorf("close without detach: %v", err)
			}
			for _, dev := range l4Ifaces {
				if !xdpAttached(t, n.l4, dev) {
					t.Errorf("%s lost its XDP program when the dataplane closed without detach", dev)
				}
			}
			n.open(t)
		})
		xdpWho(t, c)
	})

	t.Run("new flows off reach userspace", func(t *testing.T) {
		if got := n.userspace.accepted.Load(); got != 0 {
			t.Errorf("userspace proxy accepted %d connections while XDP took every flow, want 0", got)
		}
		if err := n.dp.SetNewFlows(false); err != nil {
			t.Fatal(err)
		}
		defer n.dp.SetNewFlows(true)
		before := n.stats(t)

		c := n.dial(t, 80)
		f := xdpWho(t, c)
		xdpUpload(t, c, 1<<20, 7)
		if f[2] != "l7a" {
			t.Errorf("flow with new flows off reached %s, want l7a through the userspace proxy", f[2])
		}
		if got := n.userspace.accepted.Load(); got != 1 {
			t.Errorf("userspace proxy accepted %d connections, want 1", got)
		}
		after := n.stats(t)
		if after["pass/new_flows_off"] != before["pass/new_flows_off"]+1 {
			t.Errorf("pass/new_flows_off went from %d to %d, want +1", before["pass/new_flows_off"], after["pass/new_flows_off"])
		}
		if after["new_flows"] != before["new_flows"] {
			t.Errorf("new_flows went from %d to %d, want no XDP flow", before["new_flows"], after["new_flows"])
		}
	})

	t.Run("detach removes everything", func(t *testing.T) {
		if err := n.dp.Close(true); err != nil {
			t.Fatalf("close with detach: %v", err)
		}
		n.dp = nil
		for _, dev := range l4Ifaces {
			if xdpAttached(t, n.l4, dev) {
				t.Errorf("%s still has an XDP program after detach", dev)
			}
		}
		if _, err := os.Stat(n.pinDir); !os.IsNotExist(err) {
			t.Errorf("pin directory %s still exists after detach (stat: %v)", n.pinDir, err)
		}
	})
}
