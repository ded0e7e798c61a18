//go:build linux

package xdp

import (
	"net"
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
