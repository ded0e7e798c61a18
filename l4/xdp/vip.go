//go:build linux

package xdp

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/cilium/ebpf"

	"github.com/tidegate/tidegate/l4/maglev"
)

// SetVIP adds or replaces a VIP. table must be built over reals, in the
// same order, by [maglev.New], so that the program picks the real the
// userspace engine would pick. It returns an error wrapping [ErrUnsupported]
// for IPv6 addresses and for tables larger than [RingSlotsMax]; the
// userspace engine keeps serving such a VIP.
//
// NOTE: slots are written one by one, so for a moment during a change new
// flows may see a mix of the old and the new table. Established flows keep
// their real either way.
func (d *Dataplane) SetVIP(vip netip.AddrPort, reals []netip.AddrPort, table *maglev.Table, clientAffinity bool) error {
	if !vip.Addr().Unmap().Is4() {
		return fmt.Errorf("set vip %s: %w (IPv6 VIPs)", vip, ErrUnsupported)
	}
	if table.Size() > RingSlotsMax {
		return fmt.Errorf("set vip %s: %w (Maglev table of %d slots, at most %d)", vip, ErrUnsupported, table.Size(), RingSlotsMax)
	}
	if len(reals) > realsPerVIP {
		return fmt.Errorf("set vip %s: %w (%d reals, at most %d)", vip, ErrUnsupported, len(reals), realsPerVIP)
	}
	for _, r := range reals {
		if !r.Addr().Unmap().Is4() {
			return fmt.Errorf("set vip %s: %w (IPv6 real %s)", vip, ErrUnsupported, r)
		}
	}
	vip = netip.AddrPortFrom(vip.Addr().Unmap(), vip.Port())

	d.mu.Lock()
	defer d.mu.Unlock()

	id, ok := d.vipIDs[vip]
	if !ok {
		var err error
		id, err = d.allocVIPID()
		if err != nil {
			return fmt.Errorf("set vip %s: %w", vip, err)
		}
	}

	base := id * realsPerVIP
	for i, r := range reals {
		v := lbReal{Addr: addrToBE(r.Addr().Unmap()), Port: portToBE(r.Port())}
		if err := d.objs.Reals.Update(base+uint32(i), &v, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("set vip %s: write real %s: %w", vip, r, err)
		}
	}

	entries := table.Entries()
	keys := make([]uint32, len(entries))
	values := make([]uint32, len(entries))
	for i, e := range entries {
		keys[i] = id*RingSlotsMax + uint32(i)
		values[i] = base + e
	}
	if _, err := d.objs.Rings.BatchUpdate(keys, values, nil); err != nil {
		return fmt.Errorf("set vip %s: write Maglev table: %w", vip, err)
	}

	meta := lbVipMeta{Id: id, RingSize: uint32(len(entries))}
	if clientAffinity {
		meta.Flags = 1
	}
	if err := d.objs.Vips.Update(vipKey(vip), &meta, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("set vip %s: %w", vip, err)
	}
	d.vipIDs[vip] = id

	// Stale reals past the new list stay unreachable, because no ring
	// slot points at them any more.
	d.keepNeighbours(reals)
	return nil
}

// RemoveVIP stops new XDP flows to vip; established flows continue until
// they close or expire. Removing an unknown VIP is not an error.
func (d *Dataplane) RemoveVIP(vip netip.AddrPort) error {
	vip = netip.AddrPortFrom(vip.Addr().Unmap(), vip.Port())

	d.mu.Lock()
	defer d.mu.Unlock()

	id, ok := d.vipIDs[vip]
	if !ok {
		return nil
	}
	if err := d.objs.Vips.Delete(vipKey(vip)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("remove vip %s: %w", vip, err)
	}
	delete(d.vipIDs, vip)
	d.freeIDs = append(d.freeIDs, id)
	return nil
}

func (d *Dataplane) allocVIPID() (uint32, error) {
	if n := len(d.freeIDs); n > 0 {
		id := d.freeIDs[n-1]
		d.freeIDs = d.freeIDs[:n-1]
		return id, nil
	}
	used := uint32(len(d.vipIDs))
	if used >= uint32(d.cfg.MaxVIPs) {
		return 0, fmt.Errorf("all %d VIP slots in use: %w", d.cfg.MaxVIPs, syscall.ENOSPC)
	}
	// IDs below len(vipIDs)+len(freeIDs) are taken or listed as free.
	for id := uint32(0); id < uint32(d.cfg.MaxVIPs); id++ {
		if !d.idTaken(id) {
			return id, nil
		}
	}
	return 0, fmt.Errorf("all %d VIP slots in use: %w", d.cfg.MaxVIPs, syscall.ENOSPC)
}

func (d *Dataplane) idTaken(id uint32) bool {
	for _, v := range d.vipIDs {
		if v == id {
			return true
		}
	}
	return false
}

// restoreVIPs reads the VIPs of pinned maps from an earlier run, so that
// SetVIP keeps their IDs and rings.
func (d *Dataplane) restoreVIPs() error {
	var (
		k    lbVipKey
		meta lbVipMeta
	)
	it := d.objs.Vips.Iterate()
	for it.Next(&k, &meta) {
		vip := netip.AddrPortFrom(addrFromBE(k.Addr), portFromBE(k.Port))
		d.vipIDs[vip] = meta.Id
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("xdp: read pinned vips: %w", err)
	}
	return nil
}

func vipKey(vip netip.AddrPort) *lbVipKey {
	return &lbVipKey{Addr: addrToBE(vip.Addr()), Port: portToBE(vip.Port()), Proto: syscall.IPPROTO_TCP}
}
