//go:build linux

package xdp

import (
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// keepNeighbours asks the kernel to keep the neighbour entries of the reals
// resolved. bpf_fib_lookup only reads the neighbour table, and the program
// consumes the packets that would otherwise make the kernel resolve them,
// so without this step flows to a real would be dropped with no_neigh.
// A managed entry (NTF_EXT_MANAGED, Linux 5.16 and later) is re-probed by
// the kernel on its own. Failures are logged, not returned: the kernel
// still resolves the real when the L4 itself talks to it.
func (d *Dataplane) keepNeighbours(reals []netip.AddrPort) {
	if d.neigh == nil {
		return
	}
	for _, r := range reals {
		addr := r.Addr().Unmap()
		routes, err := d.neigh.RouteGet(addr.AsSlice())
		if err != nil || len(routes) == 0 {
			d.logger.Warn("no route to real", "real", r.String(), "err", err)
			continue
		}
		rt := routes[0]
		next := addr.AsSlice()
		if rt.Gw != nil {
			next = rt.Gw
		}
		n := &netlink.Neigh{
			LinkIndex: rt.LinkIndex,
			Family:    unix.AF_INET,
			State:     unix.NUD_NONE,
			Flags:     unix.NTF_EXT_LEARNED,
			FlagsExt:  netlink.NTF_EXT_MANAGED,
			IP:        next,
		}
		if err := d.neigh.NeighSet(n); err != nil {
			d.logger.Warn("keep neighbour of real resolved", "real", r.String(), "err", err)
		}
	}
}
