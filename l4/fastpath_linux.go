//go:build linux

package l4

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tidegate/tidegate/l4/xdp"
	"github.com/tidegate/tidegate/shared/config"
)

// fastPath runs the XDP engine in front of the userspace engine. It copies
// every published Maglev table into the BPF maps on its own goroutine, so
// the [TableObserver] returns at once. VIPs the XDP engine cannot carry stay
// with the userspace engine, which listens on every VIP either way.
type fastPath struct {
	dp     *xdp.Dataplane
	logger *slog.Logger

	drainMu sync.Mutex // serializes drains, so tables are installed in order

	mu      sync.Mutex
	addrs   map[string]config.VIP // VIP name -> configuration
	pending map[string]*Snapshot  // latest unapplied snapshot per VIP
	set     map[string]netip.AddrPort
	reasons map[string]string // last reason a VIP is userspace only
	kick    chan struct{}
	done    chan struct{}
	wg      sync.WaitGroup
}

func startFastPath(cfg *config.L4, logger *slog.Logger, reg prometheus.Registerer) (*fastPath, error) {
	xc, err := xdp.ConfigFrom(cfg.Dataplane)
	if err != nil {
		return nil, err
	}
	dp, err := xdp.Open(xc, logger, reg)
	if err != nil {
		return nil, err
	}
	f := &fastPath{
		dp:      dp,
		logger:  logger,
		pending: map[string]*Snapshot{},
		set:     map[string]netip.AddrPort{},
		reasons: map[string]string{},
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	f.apply(cfg)
	f.wg.Add(1)
	go f.run()
	return f, nil
}

// apply records the VIPs of cfg and withdraws those that are gone.
func (f *fastPath) apply(cfg *config.L4) {
	f.mu.Lock()
	defer f.mu.Unlock()

	f.addrs = make(map[string]config.VIP, len(cfg.VIPs))
	for _, v := range cfg.VIPs {
		f.addrs[v.Name] = v
	}
	for name, addr := range f.set {
		if v, ok := f.addrs[name]; !ok || v.Address != addr.String() {
			if err := f.dp.RemoveVIP(addr); err != nil {
				f.logger.Warn("remove xdp vip", "vip", name, "err", err)
			}
			delete(f.set, name)
		}
	}
}

// observe is the [TableObserver]: it queues the snapshot and returns.
func (f *fastPath) observe(s *Snapshot) {
	f.mu.Lock()
	f.pending[s.VIP] = s
	f.mu.Unlock()
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

func (f *fastPath) run() {
	defer f.wg.Done()
	for {
		select {
		case <-f.done:
			return
		case <-f.kick:
		}

		f.drain()
	}
}

// drain installs every queued snapshot. Start calls it once after
// registering the observer, so that the tables are in the maps before the
// L4 reports ready.
func (f *fastPath) drain() {
	f.drainMu.Lock()
	defer f.drainMu.Unlock()

	f.mu.Lock()
	batch := f.pending
	f.pending = map[string]*Snapshot{}
	f.mu.Unlock()

	for _, s := range batch {
		f.install(s)
	}
}

// install writes one snapshot into the maps, or withdraws the VIP from XDP
// and logs why when the XDP engine cannot carry it.
func (f *fastPath) install(s *Snapshot) {
	f.mu.Lock()
	defer f.mu.Unlock()

	vc, ok := f.addrs[s.VIP]
	if !ok {
		return
	}
	reason := ""
	vip, err := netip.ParseAddrPort(vc.Address)
	switch {
	case err != nil || !vip.Addr().Unmap().Is4() || vip.Addr().IsUnspecified():
		reason = "address is not one IPv4 address"
	case vc.ProxyProtocol != "v2":
		reason = "proxy_protocol " + vc.ProxyProtocol + " (XDP writes v2 only)"
	case s.Table == nil:
		reason = "no usable real"
	}

	var reals []netip.AddrPort
	for _, r := range s.Reals {
		if reason != "" {
			break
		}
		ap, err := netip.ParseAddrPort(r)
		if err != nil || !ap.Addr().Unmap().Is4() {
			reason = fmt.Sprintf("real %s is not an IPv4 address and port", r)
			break
		}
		reals = append(reals, ap)
	}

	if reason == "" {
		err := f.dp.SetVIP(vip, reals, s.Table, s.ClientAffinity)
		if err == nil {
			f.set[s.VIP] = vip
			if f.reasons[s.VIP] != "" {
				f.logger.Info("vip served by xdp", "vip", s.VIP)
			}
			f.reasons[s.VIP] = ""
			return
		}
		reason = err.Error()
		if !errors.Is(err, xdp.ErrUnsupported) {
			f.logger.Error("set xdp vip", "vip", s.VIP, "err", err)
		}
	}

	if addr, ok := f.set[s.VIP]; ok {
		if err := f.dp.RemoveVIP(addr); err != nil {
			f.logger.Warn("remove xdp vip", "vip", s.VIP, "err", err)
		}
		delete(f.set, s.VIP)
	}
	if f.reasons[s.VIP] != reason {
		f.logger.Info("vip served by the userspace engine only", "vip", s.VIP, "reason", reason)
		f.reasons[s.VIP] = reason
	}
}

// close stops the table copier and closes the dataplane. With detach false
// the program stays attached through its pins and keeps forwarding
// established flows for the next start.
func (f *fastPath) close(detach bool) error {
	close(f.done)
	f.wg.Wait()
	return f.dp.Close(detach)
}
