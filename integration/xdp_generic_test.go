//go:build integration && linux

package integration

import (
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// xdpAttachMode returns the XDP attach mode of a link in ns, as netlink
// reports it (nl.XDP_ATTACHED_DRV, nl.XDP_ATTACHED_SKB, ...).
func xdpAttachMode(t *testing.T, ns netns.NsHandle, name string) uint32 {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("find %s: %v", name, err)
	}
	if l.Attrs().Xdp == nil {
		return 0
	}
	return l.Attrs().Xdp.AttachMode
}

func TestXDPGenericMode(t *testing.T) {
	n := newXDPNet(t, false)
	// Generic XDP receives the sender's GSO and TSO super-frames, so every
	// sender segments in software first.
	for ns, dev := range map[string]string{"cli": "tgxc", "l7a": "tgxa", "l7b": "tgxb"} {
		nsExec(t, n.prefix+ns, "ethtool", "-K", dev, "tso", "off", "gso", "off")
	}
	for _, dev := range l4Ifaces {
		nsExec(t, n.prefix+"l4", "ethtool", "-K", dev, "tso", "off", "gso", "off")
	}
	n.generic = true
	n.open(t)
	t.Cleanup(func() { n.dp.Close(true) })

	const attachedSKB = 2 // XDP_ATTACHED_SKB in linux/if_link.h
	for _, dev := range l4Ifaces {
		if mode := xdpAttachMode(t, n.l4, dev); mode != attachedSKB {
			t.Errorf("%s XDP attach mode = %d, want generic (%d)", dev, mode, attachedSKB)
		}
	}

	before := n.stats(t)
	xdpUpload(t, n.dial(t, 80), 8<<20, 21)
	xdpDownload(t, n.dial(t, 80), 8<<20, 22, nil)
	xdpWho(t, n.dial(t, 80))
	after := n.stats(t)
	if got := after["new_flows"] - before["new_flows"]; got != 3 {
		t.Errorf("new_flows grew by %d, want 3 connections through generic XDP", got)
	}
}
