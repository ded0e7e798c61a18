//go:build linux

package xdp

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func requirePrivileged(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true but not running as root: privileged tests must run in CI")
	}
	t.Skip("needs root or CAP_BPF and CAP_NET_ADMIN")
}

// Addresses of the test-run network. The L4 has one interface towards the
// client and one towards the reals; every peer has a permanent neighbour
// entry, so bpf_fib_lookup resolves without traffic.
var (
	clientMAC = net.HardwareAddr{0x02, 0, 0, 0, 1, 2}
	realMAC   = net.HardwareAddr{0x02, 0, 0, 0, 2, 2}
	real2MAC  = net.HardwareAddr{0x02, 0, 0, 0, 2, 3}

	clientAddr = netip.MustParseAddr("10.200.1.2")
	vipAddr    = netip.MustParseAddr("10.200.1.10")
	snatAddr   = netip.MustParseAddr("10.200.2.1")
	real1      = netip.MustParseAddrPort("10.200.2.2:8080")
	real2      = netip.MustParseAddrPort("10.200.2.3:8080")
	vip        = netip.AddrPortFrom(vipAddr, 80)
)

// testNet is a network namespace holding two veth pairs, for running the
// program through BPF_PROG_TEST_RUN with working FIB lookups.
type testNet struct {
	ns          netns.NsHandle
	clientIf    *net.Interface // L4 side towards the client
	realIf      *net.Interface // L4 side towards the reals
	clientIdx   int
	realIdx     int
	l4ClientMAC net.HardwareAddr
	l4RealMAC   net.HardwareAddr
}

// inNS runs fn on a thread switched into ns and bound to CPU 0, so that
// every test run of the program uses the same per-CPU next-hop cache.
func inNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is not unlocked, so Go discards it afterwards
		// instead of reusing a thread that sits in another namespace
		// or on one CPU.
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		var cpus unix.CPUSet
		cpus.Set(0)
		if err := unix.SchedSetaffinity(0, &cpus); err != nil {
			errc <- fmt.Errorf("bind test thread to CPU 0: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func newTestNet(t testing.TB) *testNet {
	t.Helper()
	requirePrivileged(t)

	type result struct {
		ns  netns.NsHandle
		err error
	}
	done := make(chan result, 1)
	go func() {
		// netns.New moves the calling thread into the new namespace;
		// the locked thread ends with this goroutine.
		runtime.LockOSThread()
		ns, err := netns.New()
		done <- result{ns, err}
	}()
	r := <-done
	ns, err := r.ns, r.err
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() { ns.Close() })

	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	defer h.Delete()

	tn := &testNet{ns: ns}
	mk := func(name, peer string, addr string, neigh map[netip.Addr]net.HardwareAddr) (netlink.Link, error) {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer}
		if err := h.LinkAdd(veth); err != nil {
			return nil, fmt.Errorf("add veth %s: %w", name, err)
		}
		l, err := h.LinkByName(name)
		if err != nil {
			return nil, err
		}
		p, err := h.LinkByName(peer)
		if err != nil {
			return nil, err
		}
		for _, a := range []string{addr} {
			nl, _ := netlink.ParseAddr(a)
			if err := h.AddrAdd(l, nl); err != nil {
				return nil, fmt.Errorf("add %s to %s: %w", a, name, err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			return nil, err
		}
		if err := h.LinkSetUp(p); err != nil {
			return nil, err
		}
		for ip, mac := range neigh {
			n := &netlink.Neigh{LinkIndex: l.Attrs().Index, IP: ip.AsSlice(), HardwareAddr: mac, State: netlink.NUD_PERMANENT}
			if err := h.NeighSet(n); err != nil {
				return nil, fmt.Errorf("add neighbour %s: %w", ip, err)
			}
		}
		return l, nil
	}

	cl, err := mk("tgxc0", "tgxc1", "10.200.1.1/24", map[netip.Addr]net.HardwareAddr{clientAddr: clientMAC})
	if err != nil {
		t.Fatal(err)
	}
	rl, err := mk("tgxr0", "tgxr1", "10.200.2.1/24", map[netip.Addr]net.HardwareAddr{real1.Addr(): realMAC, real2.Addr(): real2MAC})
	if err != nil {
		t.Fatal(err)
	}
	vipNet, _ := netlink.ParseAddr(vipAddr.String() + "/32")
	if err := h.AddrAdd(cl, vipNet); err != nil {
		t.Fatalf("add vip: %v", err)
	}
	tn.clientIdx = cl.Attrs().Index
	tn.realIdx = rl.Attrs().Index
	tn.l4ClientMAC = cl.Attrs().HardwareAddr
	tn.l4RealMAC = rl.Attrs().HardwareAddr

	err = inNS(ns, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/conf/all/forwarding", []byte("1"), 0o644)
	})
	if err != nil {
		t.Fatalf("enable forwarding: %v", err)
	}
	return tn
}

// loadTest loads the program with cfg defaults for the test network, adds
// both L4 interfaces as redirect targets and sets the test VIP.
func (tn *testNet) load(t testing.TB, cfg Config) *Dataplane {
	t.Helper()
	if !cfg.SNATAddr.IsValid() {
		cfg.SNATAddr = snatAddr
	}
	if cfg.PortMin == 0 {
		cfg.PortMin, cfg.PortMax = 40000, 40063
	}
	if cfg.FlowTableSize == 0 {
		cfg.FlowTableSize = 128
	}
	if cfg.MaxVIPs == 0 {
		cfg.MaxVIPs = 2
	}
	cfg = cfg.withDefaults()
	d, err := load(cfg, nil)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { d.Close(true) })

	// The kernel resolves devmap ifindexes in the updating thread's
	// network namespace.
	err = inNS(tn.ns, func() error {
		for _, idx := range []int{tn.clientIdx, tn.realIdx} {
			if err := d.objs.TxPorts.Update(uint32(idx), uint32(idx), ebpf.UpdateAny); err != nil {
				return fmt.Errorf("add tx port %d: %w", idx, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// xdpMD mirrors struct xdp_md, the context of an XDP test run.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// run passes frame through the program as if received on ifindex and
// returns the verdict and the frame after the program.
func (tn *testNet) run(t testing.TB, d *Dataplane, ifindex int, frame []byte) (uint32, []byte) {
	t.Helper()
	var (
		ret uint32
		out = make([]byte, len(frame)+256)
	)
	err := inNS(tn.ns, func() error {
		opts := &ebpf.RunOptions{
			Data:    frame,
			DataOut: out,
			Context: xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: uint32(ifindex)},
		}
		var err error
		ret, err = d.objs.XdpLb.Run(opts)
		out = opts.DataOut
		return err
	})
	if err != nil {
		t.Fatalf("test run: %v", err)
	}
	return ret, out
}
