//go:build linux

package xdp

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestKeepGatewaysManagesNeighbour(t *testing.T) {
	tn := newTestNet(t)
	d := tn.load(t, Config{})

	h, err := netlink.NewHandleAt(tn.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	gw := net.ParseIP("10.200.2.9")
	_, dst, _ := net.ParseCIDR("10.250.0.0/16")
	if err := h.RouteAdd(&netlink.Route{LinkIndex: tn.realIdx, Dst: dst, Gw: gw}); err != nil {
		t.Fatalf("add route via %s: %v", gw, err)
	}

	d.neigh = h
	d.ifaces = []*net.Interface{{Index: tn.realIdx, Name: "tgxr0"}}
	d.keepGateways()
	d.neigh = nil // owned by this test, not by Close

	neighs, err := h.NeighList(tn.realIdx, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if n.IP.Equal(gw) {
			if n.FlagsExt&netlink.NTF_EXT_MANAGED == 0 {
				t.Errorf("neighbour %s has flags_ext %#x, want NTF_EXT_MANAGED", gw, n.FlagsExt)
			}
			return
		}
	}
	t.Errorf("no neighbour entry for gateway %s after keepGateways", gw)
}

// TestKeepNeighboursKeepsResolvedEntry checks the kernel behaviour that
// SetVIP relies on when it runs again for a table change: replacing a
// resolved neighbour entry with a managed one keeps it resolved, so
// bpf_fib_lookup never finds the real's next hop unresolved.
func TestKeepNeighboursKeepsResolvedEntry(t *testing.T) {
	// NUD_VALID in include/net/neighbour.h: the states in which
	// bpf_fib_lookup returns the neighbour's address.
	const nudValid = netlink.NUD_PERMANENT | netlink.NUD_NOARP | netlink.NUD_REACHABLE |
		netlink.NUD_PROBE | netlink.NUD_STALE | netlink.NUD_DELAY

	tests := []struct {
		name  string
		state int
	}{
		{"reachable", netlink.NUD_REACHABLE},
		{"stale", netlink.NUD_STALE},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tn := newTestNet(t)
			d := tn.load(t, Config{})
			h, err := netlink.NewHandleAt(tn.ns)
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()

			// The peer of tgxr0 has no address, so an entry that lost
			// its address would stay unresolved.
			addr := netip.MustParseAddrPort("10.200.2.7:8080")
			ip := net.IP(addr.Addr().AsSlice())
			err = h.NeighSet(&netlink.Neigh{LinkIndex: tn.realIdx, Family: unix.AF_INET, IP: ip, HardwareAddr: realMAC, State: tc.state})
			if err != nil {
				t.Fatalf("add neighbour %s: %v", ip, err)
			}

			d.neigh = h
			for range 2 { // once when the VIP is set, again on a table change
				d.keepNeighbours([]netip.AddrPort{addr})
			}
			d.neigh = nil // owned by this test, not by Close

			n := findNeighbour(t, h, tn.realIdx, ip)
			if n.State&nudValid == 0 {
				t.Errorf("neighbour %s has state %#x after keepNeighbours, want a valid state (was %#x)", ip, n.State, tc.state)
			}
			if n.HardwareAddr.String() != realMAC.String() {
				t.Errorf("neighbour %s has address %s, want %s", ip, n.HardwareAddr, realMAC)
			}
			if n.FlagsExt&netlink.NTF_EXT_MANAGED == 0 {
				t.Errorf("neighbour %s has flags_ext %#x, want NTF_EXT_MANAGED", ip, n.FlagsExt)
			}
		})
	}
}

func findNeighbour(t *testing.T, h *netlink.Handle, ifindex int, ip net.IP) netlink.Neigh {
	t.Helper()
	neighs, err := h.NeighList(ifindex, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if n.IP.Equal(ip) {
			return n
		}
	}
	t.Fatalf("no neighbour entry for %s", ip)
	return netlink.Neigh{}
}
