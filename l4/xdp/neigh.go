//go:build linux

package xdp

import (
	"net"
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
		if err := d.manageNeighbour(rt.LinkIndex, next); err != nil {
			d.logger.Warn("keep neighbour of real resolved", "real", r.String(), "err", err)
		}
	}
}

// keepGateways installs managed neighbour entries for the IPv4 gateways of
// routes through the attached interfaces. Replies to clients behind a
// router leave through such a gateway, and the program consumes the
// client traffic that would otherwise keep the gateway's entry fresh.
func (d *Dataplane) keepGateways() {
	for _, iface := range d.ifaces {
		l, err := d.neigh.LinkByIndex(iface.Index)
		if err != nil {
			d.logger.Warn("list routes for gateways", "interface", iface.Name, "err", err)
			continue
		}
		routes, err := d.neigh.RouteList(l, unix.AF_INET)
		if err != nil {
			d.logger.Warn("list routes for gateways", "interface", iface.Name, "err", err)
			continue
		}
		for _, rt := range routes {
			if rt.Gw == nil {
				continue
			}
			if err := d.manageNeighbour(iface.Index, rt.Gw); err != nil {
				d.logger.Warn("keep neighbour of gateway resolved", "interface", iface.Name, "gateway", rt.Gw.String(), "err", err)
			}
		}
	}
}

func (d *Dataplane) manageNeighbour(ifindex int, ip net.IP) error {
	return d.neigh.NeighSet(&netlink.Neigh{
		LinkIndex: ifindex,
		Family:    unix.AF_INET,
		State:     unix.NUD_NONE,
		Flags:     unix.NTF_EXT_LEARNED,
		FlagsExt:  netlink.NTF_EXT_MANAGED,
		IP:        ip,
	})
}
