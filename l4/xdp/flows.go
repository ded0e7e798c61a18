//go:build linux

package xdp

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// orphanAge is the minimum age of a reverse entry without a forward entry
// before a sweep removes it, because a new flow briefly has one.
const orphanAge = time.Second

const closingStates = uint8(lbFlowStateFLOW_FIN_CLIENT | lbFlowStateFLOW_FIN_REAL | lbFlowStateFLOW_RST)

// SweepResult counts what one sweep found and did.
type SweepResult struct {
	Flows   int // live connections after the sweep
	Expired int // connections removed
	Orphans int // half entries without their other direction, removed
}

func (d *Dataplane) sweepLoop() {
	defer d.sweepers.Done()
	t := time.NewTicker(d.cfg.SweepInterval)
	defer t.Stop()

	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
			if _, err := d.Sweep(); err != nil {
				d.logger.Warn("sweep xdp flows", "err", err)
			}
		}
	}
}

// Sweep removes expired flows and returns their SNAT ports to the free
// queue. A flow expires ClosingTimeout after a FIN or RST in either
// direction or when its handshake has not completed, and IdleTimeout after
// its last packet otherwise.
//
// NOTE: a packet that arrives between the check and the delete of an
// expired flow finds no flow and goes to the kernel, which resets the
// connection. Only flows idle for a whole timeout are at risk.
func (d *Dataplane) Sweep() (SweepResult, error) {
	var res SweepResult

	now, err := monotonicNow()
	if err != nil {
		return res, err
	}

	type pair struct {
		fwdKey, revKey lbFlowKey
		port           uint16
		created        uint64
	}
	var (
		expired []pair
		orphans []lbFlowKey
		key     lbFlowKey
		f       lbFlow
	)

	// TODO: read the table with batch lookups once it holds more than a
	// few thousand flows; one lookup per entry costs a system call each.
	it := d.objs.Flows.Iterate()
	for it.Next(&key, &f) {
		if lbFlowDir(f.Dir) != lbFlowDirFLOW_FORWARD {
			// Reverse entries are checked through their forward
			// entry, below, except when that one is gone.
			// The program inserts the reverse entry of a new flow just
			// before its forward entry, so only an old one is an orphan.
			var fwd lbFlow
			err := d.objs.Flows.Lookup(forwardKeyOf(&f), &fwd)
			if errors.Is(err, ebpf.ErrKeyNotExist) && time.Duration(now-min(now, f.Created)) >= orphanAge {
				orphans = append(orphans, key)
			}
			continue
		}

		revKey := reverseKeyOf(&f)
		var rev lbFlow
		revErr := d.objs.Flows.Lookup(&revKey, &rev)

		last := f.LastSeen
		state := f.State // the program keeps state in the forward entry
		if revErr == nil {
			last = max(last, rev.LastSeen)
		}
		idle := time.Duration(now - min(now, last))

		timeout := d.cfg.IdleTimeout
		if state&closingStates != 0 || state&uint8(lbFlowStateFLOW_ESTABLISHED) == 0 {
			timeout = d.cfg.ClosingTimeout
		}
		if idle < timeout {
			res.Flows++
			continue
		}
		expired = append(expired, pair{fwdKey: key, revKey: revKey, port: portFromBE(f.Sport), created: f.Created})
	}
	if err := it.Err(); err != nil {
		return res, fmt.Errorf("xdp: iterate flows: %w", err)
	}

	for _, p := range expired {
		// The program also ends flows when a client reuses its port.
		// Only the side that removed the forward entry returns the port,
		// so the port is queued once.
		// A client that reused its port since the iteration has a new
		// flow under the same key, which must stay. The program could
		// still replace the flow between this lookup and the delete;
		// that window is a few microseconds where it was a whole sweep.
		var cur lbFlow
		if err := d.objs.Flows.Lookup(&p.fwdKey, &cur); err != nil || cur.Created != p.created {
			continue
		}
		if err := d.objs.Flows.Delete(&p.fwdKey); err != nil {
			continue
		}
		d.objs.Flows.Delete(&p.revKey)
		if err := d.objs.FreePorts.Update(nil, p.port, ebpf.UpdateAny); err != nil {
			d.metrics.portErrors.Inc()
			d.logger.Warn("return snat port", "port", p.port, "err", err)
		}
		res.Expired++
	}
	for _, k := range orphans {
		// A reverse entry without its forward entry can only come from
		// a failed insert in the program, which returns the port
		// itself, so the port is not pushed again here.
		if err := d.objs.Flows.Delete(&k); err == nil {
			res.Orphans++
		}
	}

	d.metrics.expired.Add(float64(res.Expired))
	d.metrics.orphans.Add(float64(res.Orphans))
	d.metrics.flows.Set(float64(res.Flows))
	return res, nil
}

func reverseKeyOf(fwd *lbFlow) lbFlowKey {
	return lbFlowKey{Saddr: fwd.Daddr, Daddr: fwd.Saddr, Sport: fwd.Dport, Dport: fwd.Sport}
}

func forwardKeyOf(rev *lbFlow) *lbFlowKey {
	return &lbFlowKey{Saddr: rev.Daddr, Daddr: rev.Saddr, Sport: rev.Dport, Dport: rev.Sport}
}

// monotonicNow returns CLOCK_MONOTONIC in nanoseconds, the clock of
// bpf_ktime_get_ns.
func monotonicNow() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("xdp: read monotonic clock: %w", err)
	}
	return uint64(ts.Nano()), nil
}
