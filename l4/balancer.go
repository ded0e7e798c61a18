package l4

import (
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidegate/tidegate/shared/config"
	"github.com/tidegate/tidegate/shared/health"
)

// TableObserver is called with every snapshot a VIP publishes, on the
// goroutine that made the change and with that VIP's lock held: it must
// return quickly and must not call the VIP's mutating methods. An XDP engine
// uses it to copy the table into its BPF map.
type TableObserver func(*Snapshot)

// Balancer is the control plane both L4 engines share: the VIPs, their
// reals, weights and health checks, and each VIP's published Maglev table.
// It binds nothing. Engines place connections through [VIP.Pick] or the
// tables handed to a [TableObserver].
type Balancer struct {
	logger *slog.Logger
	m      *metrics

	mu        sync.Mutex // guards vips, started and observers
	vips      []*VIP     // in configuration order
	started   bool
	observers []TableObserver
}

// NewBalancer builds the VIPs of cfg and registers the control-plane metrics
// with reg. Health checks start with [Balancer.Start].
func NewBalancer(cfg *config.L4, logger *slog.Logger, reg prometheus.Registerer) (*Balancer, error) {
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("register l4 metrics: %w", err)
	}
	b := &Balancer{logger: logger, m: m}
	b.Apply(cfg)
	return b, nil
}

// Observe registers fn and calls it at once with every VIP's current
// snapshot.
func (b *Balancer) Observe(fn TableObserver) {
	b.mu.Lock()
	b.observers = append(b.observers, fn)
	vips := slices.Clone(b.vips)
	b.mu.Unlock()
	for _, v := range vips {
		v.mu.Lock()
		fn(v.snap.Load())
		v.mu.Unlock()
	}
}

func (b *Balancer) notify(s *Snapshot) {
	b.mu.Lock()
	obs := slices.Clone(b.observers)
	b.mu.Unlock()
	for _, fn := range obs {
		fn(s)
	}
}

// VIPs returns the VIPs in configuration order.
func (b *Balancer) VIPs() []*VIP {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.vips)
}

// VIP returns the VIP called name, or nil.
func (b *Balancer) VIP(name string) *VIP {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, v := range b.vips {
		if v.Name == name {
			return v
		}
	}
	return nil
}

// Apply brings the VIPs to cfg, which must be validated. VIPs are matched by
// name and reals by address: what is unchanged keeps its state, health
// checker and table, so connections placed on it are not disturbed.
func (b *Balancer) Apply(cfg *config.L4) {
	b.mu.Lock()
	old := make(map[string]*VIP, len(b.vips))
	for _, v := range b.vips {
		old[v.Name] = v
	}
	var stop []*health.Checker
	vips := make([]*VIP, 0, len(cfg.VIPs))
	for _, vc := range cfg.VIPs {
		v, ok := old[vc.Name]
		if ok {
			delete(old, vc.Name)
		} else {
			v = &VIP{Name: vc.Name, logger: b.logger.With("vip", vc.Name), m: b.m, onChange: b.notify}
			v.logger.Info("vip added", "address", vc.Address, "reals", len(vc.Reals))
		}
		vips = append(vips, v)
	}
	b.vips = vips
	started := b.started
	b.mu.Unlock()

	// Each VIP takes its own lock. The balancer lock is released so that
	// observers called from a publish can read the balancer.
	for i, vc := range cfg.VIPs {
		stop = append(stop, vips[i].apply(vc)...)
		if started {
			vips[i].start()
		}
	}
	for name, v := range old {
		v.logger.Info("vip removed")
		stop = append(stop, v.stop()...)
		b.m.forgetVIP(name)
	}
	for _, c := range stop {
		c.Stop()
	}
}

// Start starts the health checks of every real.
func (b *Balancer) Start() {
	b.mu.Lock()
	b.started = true
	vips := slices.Clone(b.vips)
	b.mu.Unlock()
	for _, v := range vips {
		v.start()
	}
}

// Stop stops every health check and waits for probes in flight.
func (b *Balancer) Stop() {
	b.mu.Lock()
	b.started = false
	vips := slices.Clone(b.vips)
	b.mu.Unlock()
	var stop []*health.Checker
	for _, v := range vips {
		stop = append(stop, v.stop()...)
	}
	for _, c := range stop {
		c.Stop()
	}
}
