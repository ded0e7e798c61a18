//go:build linux

package xdp

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// watchNextHops increments the program's next-hop generation on every link,
// IPv4 address, IPv4 route and neighbour change in the network namespace of
// the calling thread, so that the program drops its cached bpf_fib_lookup
// results. Notifications lost to a full socket buffer (ENOBUFS) count as a
// change. The watch ends when the Dataplane closes.
func (d *Dataplane) watchNextHops() error {
	s, err := nl.Subscribe(unix.NETLINK_ROUTE, unix.RTNLGRP_LINK, unix.RTNLGRP_IPV4_IFADDR,
		unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_NEIGH)
	if err != nil {
		return fmt.Errorf("xdp: subscribe to route and neighbour changes: %w", err)
	}

	d.sweepers.Add(2)
	go func() {
		defer d.sweepers.Done()
		<-d.stop
		s.Close() // wakes the Receive below
	}()
	go func() {
		defer d.sweepers.Done()
		var gen uint32
		for {
			_, _, err := s.Receive()
			select {
			case <-d.stop:
				return
			default:
			}
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue
			}
			if err != nil && !errors.Is(err, unix.ENOBUFS) {
				// NOTE: from here on a cached next hop expires only
				// by age (NEXTHOP_TTL_NS in bpf/xdp_lb.c).
				d.logger.Warn("next-hop watch stopped", "err", err)
				return
			}
			gen++
			if err := d.objs.NexthopGen.Put(uint32(0), gen); err != nil {
				d.logger.Warn("update next-hop generation", "generation", gen, "err", err)
			}
		}
	}()
	return nil
}
