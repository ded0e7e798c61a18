package l4

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/tidegate/tidegate/l4/maglev"
	"github.com/tidegate/tidegate/shared/config"
	"github.com/tidegate/tidegate/shared/health"
)

// ErrRealNotFound is returned by [VIP.SetWeight] for an address that is not
// one of the VIP's reals.
var ErrRealNotFound = errors.New("l4: real not found")

// Snapshot is one published selection state of a VIP. It is immutable, so
// engines read it without locks, and a change publishes a new one.
type Snapshot struct {
	VIP     string
	Version uint64 // increases with every publish of the VIP
	// Table is nil when no real is both healthy and weighted, so no new
	// connection can be placed.
	Table *maglev.Table
	// Reals are the addresses that Table indexes refer to, in configuration
	// order, including reals that are down or drained (they own no slot).
	Reals []string
	// Weights are the effective weights the table was built from: the
	// real's weight, or 0 when it is down.
	Weights        []int
	Usable         int // reals with a positive effective weight
	ClientAffinity bool
	TableSize      uint64
}

// Pick returns up to n real addresses for a connection from client to vip,
// in Maglev preference order: the first owns the flow, the others are the
// fallbacks to try when a dial fails. It returns nil when no real is usable.
func (s *Snapshot) Pick(client, vip netip.AddrPort, n int) []string {
	if s == nil || s.Table == nil {
		return nil
	}
	var h uint64
	if s.ClientAffinity {
		h = maglev.HashClient(client.Addr())
	} else {
		h = maglev.HashFlow(client, vip)
	}

	// Asking for more reals than own slots would walk the whole table.
	n = min(n, s.Usable)
	idx := s.Table.Preference(h, n)
	out := make([]string, len(idx))
	for i, j := range idx {
		out[i] = s.Reals[j]
	}
	return out
}

// VIP is the control-plane state of one virtual service: its reals, their
// weights and health, and the current Maglev table. It is safe for
// concurrent use.
type VIP struct {
	Name string

	logger   *slog.Logger
	m        *metrics
	onChange func(*Snapshot)

	mu      sync.Mutex // guards cfg, reals, started, version and publishing
	cfg     config.VIP
	reals   []*Real
	started bool
	version uint64

	snap atomic.Pointer[Snapshot]
}

// Snapshot returns the current selection state. It is never nil after the
// VIP is built.
func (v *VIP) Snapshot() *Snapshot { return v.snap.Load() }

// Pick is [Snapshot.Pick] on the current snapshot. It takes no lock.
func (v *VIP) Pick(client, vip netip.AddrPort, n int) []string {
	return v.snap.Load().Pick(client, vip, n)
}

// Config returns the VIP's current configuration.
func (v *VIP) Config() config.VIP {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.cfg
}

// Reals returns the VIP's reals in configuration order.
func (v *VIP) Reals() []*Real {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.reals)
}

// SetWeight sets a real's weight at run time, for example 0 to drain it, and
// publishes a new table. A reload keeps the weight unless the file changes
// that real's weight.
func (v *VIP) SetWeight(addr string, weight int) error {
	if weight < 0 || weight > config.MaxRealWeight {
		return fmt.Errorf("set weight of %s: %d is outside 0..%d", addr, weight, config.MaxRealWeight)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	i := slices.IndexFunc(v.reals, func(r *Real) bool { return r.Address == addr })
	if i < 0 {
		return fmt.Errorf("set weight of %s on vip %s: %w", addr, v.Name, ErrRealNotFound)
	}
	r := v.reals[i]
	old := int(r.weight.Swap(int64(weight)))
	v.m.weight.WithLabelValues(v.Name, addr).Set(float64(weight))
	v.logger.Info("real weight set", "real", addr, "old_weight", old, "weight", weight, "source", "admin")
	v.publishLocked("weight")
	return nil
}

// apply brings the VIP to cfg. Reals whose address is unchanged keep their
// state and checker. The caller must stop the returned checkers after
// releasing every VIP lock, because a checker's callback takes v.mu.
func (v *VIP) apply(cfg config.VIP) (stop []*health.Checker) {
	v.mu.Lock()
	defer v.mu.Unlock()

	old := make(map[string]*Real, len(v.reals))
	for _, r := range v.reals {
		old[r.Address] = r
	}
	reals := make([]*Real, 0, len(cfg.Reals))
	for _, rc := range cfg.Reals {
		r, ok := old[rc.Address]
		if ok {
			delete(old, rc.Address)
			if w := rc.RealWeight(); w != r.configWeight {
				r.configWeight = w
				r.weight.Store(int64(w))
				v.logger.Info("real weight set", "real", r.Address, "weight", w, "source", "config")
			}
		} else {
			r = newReal(rc)
			v.logger.Info("real added", "real", r.Address, "weight", r.Weight())
		}
		if c := v.replaceCheckerLocked(r, cfg, rc); c != nil {
			stop = append(stop, c)
		}
		v.m.weight.WithLabelValues(v.Name, r.Address).Set(float64(r.Weight()))
		v.m.healthy.WithLabelValues(v.Name, r.Address).Set(boolFloat(r.Healthy()))
		reals = append(reals, r)
	}
	for addr, r := range old {
		v.logger.Info("real removed", "real", addr)
		if c := r.takeChecker(); c != nil {
			stop = append(stop, c)
		}
		v.m.forgetReal(v.Name, addr)
	}

	v.cfg = cfg
	v.reals = reals
	v.publishLocked("config")
	return stop
}

// replaceCheckerLocked gives r a checker built from cfg when the check
// configuration changed, and returns the checker it replaced.
func (v *VIP) replaceCheckerLocked(r *Real, cfg config.VIP, rc config.Real) *health.Checker {
	key := checkKeyFor(cfg.HealthCheck, rc, cfg.ProxyProtocol)
	r.mu.Lock()
	defer r.mu.Unlock()
	if key == r.checkKey && (r.checker != nil || key == "") {
		return nil
	}
	old := r.checker
	r.checker, r.checkKey = nil, key
	if cfg.HealthCheck == nil {
		// Without checks a real counts as healthy.
		r.healthy.Store(true)
		r.lastErr.Store(nil)
		return old
	}
	hc := cfg.HealthCheck
	var c *health.Checker
	c = health.New(health.Config{
		Interval: hc.Interval.D(),
		Timeout:  hc.Timeout.D(),
		Rise:     hc.Rise,
		Fall:     hc.Fall,
	}, r.Healthy(), newProbe(hc, rc, cfg.ProxyProtocol), func(ch health.Change) { v.onHealth(r, c, ch) })
	r.checker = c
	if v.started {
		r.checker.Start()
	}
	return old
}

// takeChecker detaches the real's checker for the caller to stop.
func (r *Real) takeChecker() *health.Checker {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.checker
	r.checker, r.checkKey = nil, ""
	return c
}

// onHealth runs on checker c's goroutine for each state change.
func (v *VIP) onHealth(r *Real, c *health.Checker, ch health.Change) {
	v.mu.Lock()
	defer v.mu.Unlock()
	r.mu.Lock()
	current := r.checker == c
	r.mu.Unlock()
	if !current || !slices.Contains(v.reals, r) {
		return // a reload replaced the checker or removed the real while the probe ran
	}
	r.healthy.Store(ch.Healthy)
	v.m.healthy.WithLabelValues(v.Name, r.Address).Set(boolFloat(ch.Healthy))
	hc := v.cfg.HealthCheck
	if ch.Healthy {
		r.lastErr.Store(nil)
		v.logger.Info("real marked up", "real", r.Address, "rise", hc.Rise)
	} else {
		msg := "unknown"
		if ch.Err != nil {
			msg = ch.Err.Error()
		}
		r.lastErr.Store(&msg)
		v.logger.Warn("real marked down", "real", r.Address, "fall", hc.Fall, "err", msg)
	}
	v.publishLocked("health")
}

// start starts the checkers of every real. A second call does nothing.
func (v *VIP) start() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.started {
		return
	}
	v.started = true
	for _, r := range v.reals {
		r.mu.Lock()
		if r.checker != nil {
			r.checker.Start()
		}
		r.mu.Unlock()
	}
}

// stop detaches every checker and returns them for the caller to stop.
func (v *VIP) stop() []*health.Checker {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.started = false
	var out []*health.Checker
	for _, r := range v.reals {
		if c := r.takeChecker(); c != nil {
			out = append(out, c)
		}
	}
	return out
}

// publishLocked builds the table for the current reals and publishes it,
// unless nothing that the table depends on changed. It runs on the
// goroutine that made the change (health, admin or reload), never on an
// engine's accept path.
func (v *VIP) publishLocked(reason string) {
	affinity := v.cfg.Affinity == "client"
	ids := make([]string, len(v.reals))
	weights := make([]int, len(v.reals))
	backends := make([]maglev.Backend, len(v.reals))
	usable := 0
	for i, r := range v.reals {
		w := r.Weight()
		if !r.Healthy() {
			w = 0
		}
		if w > 0 {
			usable++
		}
		ids[i], weights[i] = r.Address, w
		backends[i] = maglev.Backend{ID: r.Address, Weight: w}
	}

	prev := v.snap.Load()
	if prev != nil && prev.ClientAffinity == affinity && prev.TableSize == v.cfg.TableSize &&
		slices.Equal(prev.Reals, ids) && slices.Equal(prev.Weights, weights) {
		return
	}

	tbl, err := maglev.New(backends, v.cfg.TableSize)
	switch {
	case errors.Is(err, maglev.ErrNoBackend):
		v.logger.Warn("no usable real, new connections are rejected", "reason", reason, "reals", len(ids))
	case err != nil:
		// Validation makes this unreachable, but keep the old table if it happens.
		v.logger.Error("maglev table build failed, keeping the previous table", "reason", reason, "err", err)
		return
	}

	v.version++
	s := &Snapshot{
		VIP:            v.Name,
		Version:        v.version,
		Table:          tbl,
		Reals:          ids,
		Weights:        weights,
		Usable:         usable,
		ClientAffinity: affinity,
		TableSize:      v.cfg.TableSize,
	}
	v.snap.Store(s)
	v.m.rebuilds.WithLabelValues(v.Name).Inc()
	v.m.usable.WithLabelValues(v.Name).Set(float64(usable))
	v.logger.Debug("maglev table published", "reason", reason, "version", s.Version, "usable_reals", usable)
	if v.onChange != nil {
		v.onChange(s)
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
