//go:build linux

package xdp

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
)

// HeaderLen is the number of bytes the program inserts at the start of
// every client stream: a PROXY v2 header for TCP over IPv4 with a 16-byte
// PP2_TYPE_UNIQUE_ID TLV, the same layout the userspace engine writes.
const HeaderLen = 47

// RingSlotsMax is the largest Maglev table a VIP may use in the XDP engine.
const RingSlotsMax = 65537

// realsPerVIP is the number of real slots reserved per VIP in the reals map.
const realsPerVIP = 256

// Config sets up a [Dataplane].
type Config struct {
	// Interfaces are the names of the links to attach to, in the network
	// namespace of the thread that calls [Open].
	Interfaces []string
	// Generic attaches in generic (skb) mode instead of native mode.
	Generic bool
	// SNATAddr is the L4's IPv4 address towards the reals, the source of
	// every connection the program opens to a real.
	SNATAddr netip.Addr
	// PortMin and PortMax bound the SNAT source ports, inclusive. The
	// range must not overlap the kernel's ephemeral ports.
	PortMin, PortMax uint16
	// FlowTableSize is the number of connections the flow table holds.
	FlowTableSize int
	// MaxVIPs bounds the number of VIPs; each reserves RingSlotsMax slots.
	MaxVIPs int
	// PinPath is a directory on a bpffs mount for maps and links, so that
	// flows survive a restart. Empty means nothing is pinned.
	PinPath string
	// IdleTimeout expires established flows without packets.
	IdleTimeout time.Duration
	// ClosingTimeout expires flows after a FIN or RST, and flows whose
	// handshake never completed.
	ClosingTimeout time.Duration
	// SweepInterval is how often expired flows are removed. Zero disables
	// the background sweep, and [Dataplane.Sweep] still works.
	SweepInterval time.Duration
}

// Defaults used by [Config.withDefaults].
const (
	DefaultPortMin        = 20000
	DefaultPortMax        = 29999
	DefaultFlowTableSize  = 65536
	DefaultMaxVIPs        = 16
	DefaultIdleTimeout    = 300 * time.Second
	DefaultClosingTimeout = 10 * time.Second
	DefaultSweepInterval  = time.Second
)

func (c Config) withDefaults() Config {
	if c.PortMin == 0 && c.PortMax == 0 {
		c.PortMin, c.PortMax = DefaultPortMin, DefaultPortMax
	}
	if c.FlowTableSize == 0 {
		c.FlowTableSize = DefaultFlowTableSize
	}
	if c.MaxVIPs == 0 {
		c.MaxVIPs = DefaultMaxVIPs
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.ClosingTimeout == 0 {
		c.ClosingTimeout = DefaultClosingTimeout
	}
	return c
}

func (c Config) validate() error {
	if !c.SNATAddr.Is4() {
		return fmt.Errorf("xdp: snat address %q is not an IPv4 address", c.SNATAddr)
	}
	if c.PortMin == 0 || c.PortMin > c.PortMax {
		return fmt.Errorf("xdp: snat port range %d-%d is empty or starts at 0", c.PortMin, c.PortMax)
	}
	if c.FlowTableSize < 1 {
		return fmt.Errorf("xdp: flow table size %d must be positive", c.FlowTableSize)
	}
	if c.MaxVIPs < 1 || c.MaxVIPs > 1024 {
		return fmt.Errorf("xdp: max VIPs %d is outside 1..1024", c.MaxVIPs)
	}
	return nil
}

// ErrUnsupported is returned for VIPs and reals the XDP engine cannot carry;
// the userspace engine still serves them.
var ErrUnsupported = errors.New("xdp: not supported by the XDP engine")

// Dataplane owns the loaded XDP balancer: its maps, its program and the
// links that attach it. Its methods are safe for concurrent use.
type Dataplane struct {
	cfg     Config
	logger  *slog.Logger
	objs    lbObjects
	links   []link.Link
	created []bool // links[i] was created by this process, not taken over
	ifaces  []*net.Interface
	neigh   *netlink.Handle
	metrics *collector

	mu      sync.Mutex
	vipIDs  map[netip.AddrPort]uint32
	freeIDs []uint32

	stop     chan struct{}
	sweepers sync.WaitGroup
	closed   bool
}

// Open loads the balancer, reuses maps and links pinned under
// cfg.PinPath when they exist, attaches to cfg.Interfaces and starts the
// sweep of expired flows and the watch of route and neighbour changes.
// Interfaces and neighbours are looked up, and changes watched, in the
// network namespace of the calling thread. Metrics are registered with reg
// when it is not nil.
func Open(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Dataplane, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if len(cfg.Interfaces) == 0 {
		return nil, errors.New("xdp: no interface to attach to")
	}
	if err := checkEphemeralPorts(cfg.PortMin, cfg.PortMax); err != nil {
		return nil, err
	}

	// Interfaces first: a missing one is the most likely error, and
	// finding it needs no BPF.
	ifaces := make([]*net.Interface, 0, len(cfg.Interfaces))
	for _, name := range cfg.Interfaces {
		iface, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("xdp: find interface %s: %w", name, err)
		}
		ifaces = append(ifaces, iface)
	}

	d, err := load(cfg, logger)
	if err != nil {
		return nil, err
	}

	if err := d.attach(ifaces); err != nil {
		d.closeObjects()
		return nil, err
	}

	d.neigh, err = netlink.NewHandle()
	if err != nil {
		d.undoAttach()
		d.closeObjects()
		return nil, fmt.Errorf("xdp: open netlink: %w", err)
	}

	if reg != nil {
		if err := reg.Register(d.metrics); err != nil {
			d.neigh.Close()
			d.undoAttach()
			d.closeObjects()
			return nil, fmt.Errorf("xdp: register metrics: %w", err)
		}
	}

	d.keepGateways()
	if err := d.watchNextHops(); err != nil {
		d.logger.Warn("cached next hops will expire only by age", "err", err)
	}

	if cfg.SweepInterval > 0 {
		d.sweepers.Add(1)
		go d.sweepLoop()
	}
	return d, nil
}

// load loads the objects and initialises the maps without attaching.
func load(cfg Config, logger *slog.Logger) (*Dataplane, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	spec, err := loadLb()
	if err != nil {
		return nil, fmt.Errorf("xdp: load spec: %w", err)
	}

	rangeSize := uint32(cfg.PortMax) - uint32(cfg.PortMin) + 1
	spec.Maps["flows"].MaxEntries = uint32(2 * cfg.FlowTableSize)
	spec.Maps["free_ports"].MaxEntries = rangeSize
	spec.Maps["rings"].MaxEntries = uint32(cfg.MaxVIPs) * RingSlotsMax
	spec.Maps["vips"].MaxEntries = uint32(cfg.MaxVIPs)
	spec.Maps["reals"].MaxEntries = uint32(cfg.MaxVIPs) * realsPerVIP

	var opts ebpf.CollectionOptions
	mapDir := ""
	if cfg.PinPath != "" {
		mapDir = filepath.Join(cfg.PinPath, "maps")
		if err := os.MkdirAll(mapDir, 0o700); err != nil {
			return nil, fmt.Errorf("xdp: create pin directory: %w", err)
		}
		opts.Maps.PinPath = mapDir
	} else {
		for _, m := range spec.Maps {
			m.Pinning = ebpf.PinNone
		}
	}

	d := &Dataplane{
		cfg:    cfg,
		logger: logger,
		vipIDs: map[netip.AddrPort]uint32{},
		stop:   make(chan struct{}),
	}
	if err := spec.LoadAndAssign(&d.objs, &opts); err != nil {
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("xdp: load objects: %w (the pinned maps under %s were made with other sizes; stop tidegate l4 with --detach or remove the directory)", err, mapDir)
		}
		return nil, fmt.Errorf("xdp: load objects: %w", err)
	}
	d.metrics = newCollector(d)

	if err := d.initConfig(); err != nil {
		d.closeObjects()
		return nil, err
	}
	if err := d.restoreVIPs(); err != nil {
		d.closeObjects()
		return nil, err
	}
	return d, nil
}

// initConfig writes the SNAT settings and, for new maps, fills the free-port
// queue. Pinned maps from an earlier run keep their ports, since live
// flows hold some of them.
func (d *Dataplane) initConfig() error {
	var cur lbLbConfig
	if err := d.objs.Config.Lookup(uint32(0), &cur); err != nil {
		return fmt.Errorf("xdp: read config: %w", err)
	}

	fresh := cur.PortMin == 0 && cur.PortMax == 0
	if !fresh && (cur.PortMin != d.cfg.PortMin || cur.PortMax != d.cfg.PortMax) {
		return fmt.Errorf("xdp: pinned maps use snat ports %d-%d, config asks for %d-%d (stop tidegate l4 with --detach to change the range)",
			cur.PortMin, cur.PortMax, d.cfg.PortMin, d.cfg.PortMax)
	}

	next := cur
	next.SnatAddr = addrToBE(d.cfg.SNATAddr)
	next.PortMin = d.cfg.PortMin
	next.PortMax = d.cfg.PortMax
	if fresh {
		if _, err := rand.Read(next.NodeId[:]); err != nil {
			return fmt.Errorf("xdp: node id: %w", err)
		}
		for p := uint32(d.cfg.PortMin); p <= uint32(d.cfg.PortMax); p++ {
			if err := d.objs.FreePorts.Update(nil, uint16(p), ebpf.UpdateAny); err != nil {
				return fmt.Errorf("xdp: fill free ports: %w", err)
			}
		}
	}
	if err := d.objs.Config.Update(uint32(0), &next, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("xdp: write config: %w", err)
	}
	return nil
}

func (d *Dataplane) attach(ifaces []*net.Interface) error {
	flags := link.XDPDriverMode
	mode := "native"
	if d.cfg.Generic {
		flags = link.XDPGenericMode
		mode = "generic"
	}

	for _, iface := range ifaces {
		name := iface.Name
		d.ifaces = append(d.ifaces, iface)

		if err := d.objs.TxPorts.Update(uint32(iface.Index), uint32(iface.Index), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("xdp: add %s to tx ports: %w", name, err)
		}

		l, created, err := d.attachOne(iface, flags)
		if err != nil {
			d.undoAttach()
			return fmt.Errorf("xdp: attach to %s in %s mode: %w", name, mode, err)
		}
		d.links = append(d.links, l)
		d.created = append(d.created, created)
		d.logger.Info("xdp attached", "interface", name, "ifindex", iface.Index, "mode", mode)
	}
	return nil
}

// undoAttach removes the links this call created, so that a failed start
// leaves no half-attached program behind. Links taken over from pins of an
// earlier run stay, because they carry its established flows.
func (d *Dataplane) undoAttach() {
	for i, l := range d.links {
		if d.created[i] && d.cfg.PinPath != "" {
			if err := l.Unpin(); err != nil {
				d.logger.Warn("unpin link after failed attach", "interface", d.ifaces[i].Name, "err", err)
			}
		}
		l.Close()
	}
	d.links, d.created = nil, nil
}

// attachOne replaces the program of a pinned link from an earlier run, so
// that packets keep flowing during a restart, or creates and pins a link.
func (d *Dataplane) attachOne(iface *net.Interface, flags link.XDPAttachFlags) (l link.Link, created bool, err error) {
	pin := d.linkPin(iface.Name)
	if pin != "" {
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			if err := l.Update(d.objs.XdpLb); err != nil {
				l.Close()
				return nil, false, fmt.Errorf("update pinned link: %w", err)
			}
			return l, false, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, false, fmt.Errorf("load pinned link: %w", err)
		}
	}

	l, err = link.AttachXDP(link.XDPOptions{Program: d.objs.XdpLb, Interface: iface.Index, Flags: flags})
	if err != nil {
		return nil, false, err
	}
	if pin != "" {
		if err := os.MkdirAll(filepath.Dir(pin), 0o700); err != nil {
			l.Close()
			return nil, false, fmt.Errorf("create pin directory: %w", err)
		}
		if err := l.Pin(pin); err != nil {
			l.Close()
			return nil, false, fmt.Errorf("pin link: %w", err)
		}
	}
	return l, true, nil
}

func (d *Dataplane) linkPin(ifname string) string {
	if d.cfg.PinPath == "" {
		return ""
	}
	return filepath.Join(d.cfg.PinPath, "links", ifname)
}

// SetNewFlows turns new XDP flows on or off. While off, the program hands
// every new flow to the kernel, and so to the userspace engine; established
// flows continue.
func (d *Dataplane) SetNewFlows(enabled bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()

	var c lbLbConfig
	if err := d.objs.Config.Lookup(uint32(0), &c); err != nil {
		return fmt.Errorf("xdp: read config: %w", err)
	}
	if enabled {
		c.Flags &^= uint32(lbConfigFlagCONFIG_NEW_FLOWS_OFF)
	} else {
		c.Flags |= uint32(lbConfigFlagCONFIG_NEW_FLOWS_OFF)
	}
	if err := d.objs.Config.Update(uint32(0), &c, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("xdp: write config: %w", err)
	}
	return nil
}

// Close stops the sweep and releases the objects. With detach false,
// pinned links and maps stay, so the program keeps forwarding established
// flows until the next [Open] takes them over. With detach true, it unpins
// every link and map, the program detaches, and the interfaces go back to
// the kernel.
func (d *Dataplane) Close(detach bool) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()

	close(d.stop)
	d.sweepers.Wait()

	var errs []error
	for i, l := range d.links {
		if detach && d.cfg.PinPath != "" {
			if err := l.Unpin(); err != nil {
				errs = append(errs, fmt.Errorf("unpin link of %s: %w", d.ifaces[i].Name, err))
			}
		}
		if !detach && d.cfg.PinPath == "" {
			// NOTE: an unpinned link lives only as long as this
			// process holds it, so without a pin path the
			// program always detaches here.
			d.logger.Warn("xdp detached because no pin path is set", "interface", d.ifaces[i].Name)
		}
		if err := l.Close(); err != nil {
			errs = append(errs, err)
		}
	}

	if detach && d.cfg.PinPath != "" {
		for _, m := range []*ebpf.Map{d.objs.Config, d.objs.Vips, d.objs.Reals, d.objs.Rings, d.objs.Flows, d.objs.FreePorts, d.objs.TxPorts, d.objs.Stats} {
			if err := m.Unpin(); err != nil {
				errs = append(errs, err)
			}
		}
		os.Remove(filepath.Join(d.cfg.PinPath, "links"))
		os.Remove(filepath.Join(d.cfg.PinPath, "maps"))
		os.Remove(d.cfg.PinPath)
	}

	if d.neigh != nil {
		d.neigh.Close()
	}
	d.closeObjects()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("xdp: close: %w", err)
	}
	return nil
}

func (d *Dataplane) closeObjects() {
	d.objs.Close()
}

// checkEphemeralPorts rejects a SNAT range that overlaps the kernel's
// ephemeral ports, because the program would take replies that belong to
// the kernel's own connections from the SNAT address.
func checkEphemeralPorts(min, max uint16) error {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return fmt.Errorf("xdp: read ephemeral port range: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return fmt.Errorf("xdp: parse ephemeral port range %q: want two numbers", b)
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return fmt.Errorf("xdp: parse ephemeral port range %q: not numbers", b)
	}
	if int(min) <= hi && int(max) >= lo {
		return fmt.Errorf("xdp: snat port range %d-%d overlaps the kernel's ephemeral ports %d-%d (net.ipv4.ip_local_port_range); choose a range outside it", min, max, lo, hi)
	}
	return nil
}

// addrToBE returns an IPv4 address as the uint32 that holds it in network
// byte order in memory, as the BPF structs store it.
func addrToBE(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

func portToBE(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

func addrFromBE(v uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func portFromBE(v uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], v)
	return binary.BigEndian.Uint16(b[:])
}
