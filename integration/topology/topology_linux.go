//go:build linux

package topology

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// NamePrefix starts the name of every namespace and BPF pin the package
// creates. [Sweep] removes only names with this prefix.
const NamePrefix = "tge-"

const (
	netnsDir = "/run/netns"
	bpfFSDir = "/sys/fs/bpf"
)

// Topology is a running set of host namespaces joined by bridged segments.
type Topology struct {
	// Name is the prefix of every namespace of this topology, such as
	// "tge-4242-1-". It ends with a dash.
	Name string
	// Dir is a temporary directory for configurations, certificates and
	// process logs. [Topology.Close] removes it after logging the process
	// output and configurations of a failed test.
	Dir string
	// SwitchNamespace contains the bridges of the three segments.
	SwitchNamespace string

	Clients  []*Host
	L4       []*Host
	L7       []*Host
	Backends []*Host

	tb     testing.TB
	sw     netns.NsHandle
	hosts  []*Host
	mu     sync.Mutex
	procs  []*Process
	closed bool
	// extraArgs are added to every tier command line; see
	// [ChainOptions.ExtraArgs].
	extraArgs []string
	// bpffs is the mount point of [Topology.PinDir], empty until used.
	bpffs string
	// passProg and xdpLinks belong to [Topology.AttachXDPPass].
	passProg *ebpf.Program
	xdpLinks []link.Link
}

var (
	topologyCount atomic.Int64

	liveMu     sync.Mutex
	live       = map[*Topology]bool{}
	signalOnce sync.Once
)

// New builds a topology for spec and registers its teardown with
// tb.Cleanup. It first sweeps what earlier, dead test processes left behind.
// It fails the test when anything cannot be created.
func New(tb testing.TB, spec Spec) *Topology {
	tb.Helper()
	RequireRoot(tb)
	spec = spec.withDefaults()
	if err := spec.validate(); err != nil {
		tb.Fatal(err)
	}
	if err := Sweep(); err != nil {
		tb.Logf("sweep leftovers: %v", err)
	}

	name := fmt.Sprintf("%s%d-%d-", NamePrefix, os.Getpid(), topologyCount.Add(1))
	dir, err := os.MkdirTemp("", name+"dir-")
	if err != nil {
		tb.Fatalf("create topology directory: %v", err)
	}
	t := &Topology{Name: name, Dir: dir, tb: tb}
	t.SwitchNamespace = t.Name + "sw"
	register(t)
	tb.Cleanup(t.Close)

	if err := t.build(spec); err != nil {
		tb.Fatalf("build topology %s: %v", t.Name, err)
	}
	return t
}

// register adds t to the set torn down on SIGINT or SIGTERM. Without it an
// interrupted "go test" would skip every Cleanup and leave namespaces and
// processes behind until the next run's [Sweep].
func register(t *Topology) {
	liveMu.Lock()
	live[t] = true
	liveMu.Unlock()

	signalOnce.Do(func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
		go func() {
			sig := <-sigs
			fmt.Fprintf(os.Stderr, "topology: %s received, tearing down\n", sig)
			liveMu.Lock()
			all := make([]*Topology, 0, len(live))
			for t := range live {
				all = append(all, t)
			}
			liveMu.Unlock()
			for _, t := range all {
				t.teardown()
			}
			os.Exit(128 + int(sig.(syscall.Signal)))
		}()
	})
}

func (t *Topology) build(spec Spec) error {
	sw, err := newNamedNamespace(t.SwitchNamespace)
	if err != nil {
		return err
	}
	t.sw = sw
	swh, err := netlink.NewHandleAt(sw)
	if err != nil {
		return fmt.Errorf("open netlink in %s: %w", t.SwitchNamespace, err)
	}
	defer swh.Close()
	if err := linkUp(swh, "lo"); err != nil {
		return err
	}

	bridges := map[Segment]netlink.Link{}
	for _, seg := range []Segment{SegmentFront, SegmentMid, SegmentBack} {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br-" + string(seg)}}
		if err := swh.LinkAdd(br); err != nil {
			return fmt.Errorf("add bridge %s: %w", br.Name, err)
		}
		if err := swh.LinkSetUp(br); err != nil {
			return fmt.Errorf("set bridge %s up: %w", br.Name, err)
		}
		bridges[seg] = br
	}

	for _, hp := range plan(spec) {
		h, err := t.addHost(swh, bridges, hp)
		if err != nil {
			return fmt.Errorf("host %s: %w", hp.name, err)
		}
		switch h.Role {
		case RoleClient:
			t.Clients = append(t.Clients, h)
		case RoleL4:
			t.L4 = append(t.L4, h)
		case RoleL7:
			t.L7 = append(t.L7, h)
		case RoleBackend:
			t.Backends = append(t.Backends, h)
		}
	}
	return t.route()
}

func (t *Topology) addHost(swh *netlink.Handle, bridges map[Segment]netlink.Link, hp hostPlan) (*Host, error) {
	ns, err := newNamedNamespace(t.Name + hp.name)
	if err != nil {
		return nil, err
	}
	h := &Host{Name: hp.name, Role: hp.role, Index: hp.index, Namespace: t.Name + hp.name, ns: ns, topo: t}
	t.hosts = append(t.hosts, h)

	hh, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	defer hh.Close()
	if err := linkUp(hh, "lo"); err != nil {
		return nil, err
	}

	for _, ip := range hp.ifaces {
		// The veth is created straight inside the two namespaces, so the
		// root namespace never holds a device of the topology.
		peer := fmt.Sprintf("%s-%s", hp.name, ip.name)
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: ip.name, Namespace: netlink.NsFd(ns)},
			PeerName:      peer,
			PeerNamespace: netlink.NsFd(t.sw),
		}
		if err := swh.LinkAdd(veth); err != nil {
			return nil, fmt.Errorf("add veth %s/%s: %w", ip.name, peer, err)
		}
		port, err := swh.LinkByName(peer)
		if err != nil {
			return nil, fmt.Errorf("find bridge port %s: %w", peer, err)
		}
		if err := swh.LinkSetMaster(port, bridges[ip.segment]); err != nil {
			return nil, fmt.Errorf("attach %s to bridge: %w", peer, err)
		}
		if err := swh.LinkSetUp(port); err != nil {
			return nil, fmt.Errorf("set %s up: %w", peer, err)
		}

		link, err := hh.LinkByName(ip.name)
		if err != nil {
			return nil, fmt.Errorf("find %s: %w", ip.name, err)
		}
		addr := &netlink.Addr{IPNet: prefixIPNet(ip.addr)}
		if err := hh.AddrAdd(link, addr); err != nil {
			return nil, fmt.Errorf("add address %s to %s: %w", ip.addr, ip.name, err)
		}
		if err := hh.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("set %s up: %w", ip.name, err)
		}
		h.Interfaces = append(h.Interfaces, Interface{Name: ip.name, Segment: ip.segment, Prefix: ip.addr, PeerName: peer})
	}

	if h.Role == RoleL4 {
		lo, err := hh.LinkByName("lo")
		if err != nil {
			return nil, fmt.Errorf("find lo: %w", err)
		}
		vip := &netlink.Addr{IPNet: prefixIPNet(netip.PrefixFrom(VIP, 32))}
		if err := hh.AddrAdd(lo, vip); err != nil {
			return nil, fmt.Errorf("add VIP %s to lo: %w", VIP, err)
		}
		if err := h.SetSysctl("net/ipv4/ip_forward", "1"); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// route installs the routes that make the L4 nodes the path between the
// clients and everything behind them.
func (t *Topology) route() error {
	var frontHops, midHops []*netlink.NexthopInfo
	for _, l4 := range t.L4 {
		frontHops = append(frontHops, &netlink.NexthopInfo{Gw: addrIP(l4.Addr(SegmentFront))})
		midHops = append(midHops, &netlink.NexthopInfo{Gw: addrIP(l4.Addr(SegmentMid))})
	}
	for _, c := range t.Clients {
		if err := addDefaultRoute(c, frontHops); err != nil {
			return err
		}
	}
	// L7 nodes reply to clients directly only when something routes client
	// addresses to them, such as the L4 forwarding plain IP in a test.
	for _, l7 := range t.L7 {
		if err := addDefaultRoute(l7, midHops); err != nil {
			return err
		}
	}
	return nil
}

func addDefaultRoute(h *Host, hops []*netlink.NexthopInfo) error {
	hh, err := netlink.NewHandleAt(h.ns)
	if err != nil {
		return fmt.Errorf("open netlink in %s: %w", h.Name, err)
	}
	defer hh.Close()

	route := &netlink.Route{Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}}
	if len(hops) == 1 {
		route.Gw = hops[0].Gw
	} else {
		route.MultiPath = hops
	}
	if err := hh.RouteAdd(route); err != nil {
		return fmt.Errorf("add default route in %s: %w", h.Name, err)
	}
	return nil
}

// Hosts returns every host of the topology.
func (t *Topology) Hosts() []*Host { return t.hosts }

// Close stops every process, deletes every namespace (which deletes the veth
// pairs inside), removes BPF pins named after the topology and, unless the
// test failed, the temporary directory. When the test failed it first logs
// the output of every process. Close is safe to call more than once.
func (t *Topology) Close() {
	if t.tb.Failed() {
		t.dumpLogs()
	}
	t.teardown()

	liveMu.Lock()
	delete(live, t)
	liveMu.Unlock()
}

func (t *Topology) teardown() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	procs := t.procs
	t.detachXDP()
	t.mu.Unlock()

	for _, p := range procs {
		p.Stop(5 * time.Second)
	}
	var errs []error
	for _, h := range t.hosts {
		h.ns.Close()
	}
	if t.sw.IsOpen() {
		t.sw.Close()
	}
	if err := removeNamed(t.Name); err != nil {
		errs = append(errs, err)
	}
	// removeNamed also unmounts the bpffs inside Dir; this covers a Dir
	// whose name does not carry the prefix.
	_ = unmountBPFFS(t.Dir)
	if err := os.RemoveAll(t.Dir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(os.Stderr, "topology: teardown of %s: %v\n", t.Name, err)
	}
}

func (t *Topology) dumpLogs() {
	t.mu.Lock()
	procs := append([]*Process(nil), t.procs...)
	t.mu.Unlock()
	for _, p := range procs {
		t.tb.Logf("---- %s in %s (pid %d, %s) ----\n%s", p.Name, p.Host.Name, p.PID, p.State(), p.Tail(64<<10))
	}
	configs, _ := filepath.Glob(filepath.Join(t.Dir, "*.yaml"))
	for _, path := range configs {
		if data, err := os.ReadFile(path); err == nil {
			t.tb.Logf("---- %s ----\n%s", filepath.Base(path), data)
		}
	}
	for _, h := range t.hosts {
		if out, err := h.Run("ip", "-brief", "address"); err == nil {
			t.tb.Logf("---- addresses in %s ----\n%s", h.Name, out)
		}
	}
}

// Sweep removes the leftovers of test processes that have exited. It deletes
// namespaces under /run/netns, BPF pins under /sys/fs/bpf and temporary
// directories whose names start with [NamePrefix] and the PID of an exited
// process. Processes still
// running inside such a namespace get SIGKILL by PID first. Names that carry
// the PID of a running process are left alone.
func Sweep() error {
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("sweep: %w", err)
	}
	var errs []error
	prefixes := map[string]bool{}
	for _, e := range entries {
		if stale(e.Name()) {
			prefixes[runPrefix(e.Name())] = true
		}
	}
	pins, _ := os.ReadDir(bpfFSDir)
	for _, e := range pins {
		if stale(e.Name()) {
			prefixes[runPrefix(e.Name())] = true
		}
	}
	tmps, _ := os.ReadDir(os.TempDir())
	for _, e := range tmps {
		if stale(e.Name()) {
			prefixes[runPrefix(e.Name())] = true
		}
	}
	for p := range prefixes {
		if err := removeNamed(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// runPrefix returns "tge-PID-" from a name such as "tge-PID-3-l4-0".
func runPrefix(name string) string {
	rest := strings.TrimPrefix(name, NamePrefix)
	pid, _, _ := strings.Cut(rest, "-")
	return NamePrefix + pid + "-"
}

// stale reports whether name was made by a test process that has exited.
func stale(name string) bool {
	rest, ok := strings.CutPrefix(name, NamePrefix)
	if !ok {
		return false
	}
	pidText, _, _ := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(pidText)
	if err != nil || pid <= 0 {
		return false
	}
	if pid == os.Getpid() {
		return false
	}
	return !processAlive(pid)
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// removeNamed kills the processes inside, then deletes, every namespace whose
// name starts with prefix, and removes BPF pins and temporary directories
// with that prefix.
func removeNamed(prefix string) error {
	var errs []error
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		path := netnsDir + "/" + e.Name()
		if err := killInNamespace(path); err != nil {
			errs = append(errs, err)
		}
		if err := deleteNamed(path); err != nil {
			errs = append(errs, fmt.Errorf("delete namespace %s: %w", e.Name(), err))
		}
	}
	for _, dir := range []string{bpfFSDir, os.TempDir()} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), prefix) {
				continue
			}
			if err := unmountBPFFS(filepath.Join(dir, e.Name())); err != nil {
				errs = append(errs, err)
			}
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove %s: %w", filepath.Join(dir, e.Name()), err))
			}
		}
	}
	return errors.Join(errs...)
}

// unmountBPFFS unmounts the bpffs that [Topology.PinDir] mounts inside dir,
// if there is one, so that dir can be removed.
func unmountBPFFS(dir string) error {
	mnt := filepath.Join(dir, "bpffs")
	err := syscall.Unmount(mnt, syscall.MNT_DETACH)
	if err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("unmount %s: %w", mnt, err)
	}
	return nil
}

// deleteNamed unmounts and removes the namespace bound at path. Another
// test process sweeping the same leftovers may have removed it already,
// which is not an error.
func deleteNamed(path string) error {
	err := syscall.Unmount(path, syscall.MNT_DETACH)
	if err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// killInNamespace sends SIGKILL to every process whose network namespace is
// the one bound at path, and waits up to two seconds for them to exit.
func killInNamespace(path string) error {
	var want syscall.Stat_t
	if err := syscall.Stat(path, &want); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return nil // removed by a concurrent sweep
		}
		return fmt.Errorf("stat %s: %w", path, err)
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	var pids []int
	for _, p := range procs {
		var pid int
		if _, err := fmt.Sscanf(p.Name(), "%d", &pid); err != nil {
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
			continue
		}
		if st.Ino == want.Ino && st.Dev == want.Dev && pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			pids = append(pids, pid)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for _, pid := range pids {
		for processAlive(pid) && !zombie(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

func zombie(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may
	// itself contain spaces or parentheses.
	i := strings.LastIndexByte(string(data), ')')
	return i >= 0 && i+2 < len(data) && data[i+2] == 'Z'
}

// newNamedNamespace creates a namespace bound at /run/netns/name without
// moving the calling thread into it.
func newNamedNamespace(name string) (netns.NsHandle, error) {
	var ns netns.NsHandle
	orig, err := netns.Get()
	if err != nil {
		return 0, fmt.Errorf("get current network namespace: %w", err)
	}
	defer orig.Close()
	// NewNamed switches the calling thread into the new namespace, so it
	// runs through inNamespace, which restores the thread afterwards.
	err = inNamespace(orig, func() error {
		var err error
		ns, err = netns.NewNamed(name)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("create namespace %s: %w", name, err)
	}
	return ns, nil
}

func linkUp(h *netlink.Handle, name string) error {
	link, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: addrIP(p.Addr()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func addrIP(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }

// RequireRoot skips tb unless the process runs as root. Under CI=true it
// fails instead, because CI runs as root and must run these tests.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		tb.Fatal("CI=true but not running as root: network namespace tests must run in CI")
	}
	tb.Skip("needs root for network namespaces (CAP_NET_ADMIN and CAP_SYS_ADMIN)")
}
