//go:build linux

package xdp

import (
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// keepNeighbours installs managed neighbour entries (NTF_EXT_MANAGED,
// Linux 5.16 and later) for the reals' next hops, which the kernel then
// keeps resolved on its own. bpf_fib_lookup only reads the neighbour table,
// and the program consumes the packets that would otherwise make the
// kernel resolve a real, so without these entries flows to a real would be
// dropped as no_neigh. Failures are logged, not returned, because the
// kernel still resolves a real when the L4 itself connects to it.
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
