//go:build linux

package xdp

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// TestReverseTimestampsOnly covers the reverse segments that skip the
// option walk: their timestamps pass unchanged, the acknowledgment moves
// back by the header length and the checksum stays valid.
func TestReverseTimestampsOnly(t *testing.T) {
	tn := newTestNet(t)
	d := tn.load(t, Config{})
	setTestVIP(t, d, false)
	c := newConn(t, tn, d, 50800)
	c.open()
	c.forward(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK})

	ts := []byte{1, 1, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78}
	ack := c.isn + 1 + HeaderLen + 100
	got := c.reverse(segment{seq: c.rISN + 1, ack: ack, flags: flagACK | flagPSH, options: ts, payload: []byte("reply")})
	if got.ack != ack-HeaderLen {
		t.Errorf("ack = %d, want %d", got.ack, ack-HeaderLen)
	}
	if !bytes.Equal(got.options, ts) {
		t.Errorf("options = %x, want the timestamps %x unchanged", got.options, ts)
	}

	// A SACK option in the same 12 bytes still gets its edges moved.
	sack := append([]byte{1, 1}, optSACK(ack+1000, ack+2000)...)
	got = c.reverse(segment{seq: c.rISN + 1, ack: ack, flags: flagACK, options: sack})
	edges := findOption(got.options, 5)
	if len(edges) != 8 {
		t.Fatalf("options %x have no 1-block SACK", got.options)
	}
	want := append([]byte{1, 1}, optSACK(ack+1000-HeaderLen, ack+2000-HeaderLen)...)
	if !bytes.Equal(got.options, want) {
		t.Errorf("options = %x, want %x", got.options, want)
	}
}

// setNeighbour points the L4's neighbour entry for addr at mac.
func (tn *testNet) setNeighbour(t *testing.T, addr netip.Addr, mac net.HardwareAddr) {
	t.Helper()
	h, err := netlink.NewHandleAt(tn.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	n := &netlink.Neigh{LinkIndex: tn.realIdx, IP: addr.AsSlice(), HardwareAddr: mac, State: netlink.NUD_PERMANENT}
	if err := h.NeighSet(n); err != nil {
		t.Fatalf("set neighbour %s to %s: %v", addr, mac, err)
	}
}

func nextHopGeneration(t *testing.T, d *Dataplane) uint32 {
	t.Helper()
	var gen uint32
	if err := d.objs.NexthopGen.Lookup(uint32(0), &gen); err != nil {
		t.Fatalf("read next-hop generation: %v", err)
	}
	return gen
}

// TestNextHopCacheGeneration checks that a new generation makes the program
// look the next hop up again instead of using the cached one.
func TestNextHopCacheGeneration(t *testing.T) {
	tn := newTestNet(t)
	d := tn.load(t, Config{})
	setTestVIP(t, d, false)
	c := newConn(t, tn, d, 50801)
	c.open()

	first := c.forward(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK})
	moved := net.HardwareAddr{0x02, 0, 0, 0, 9, 9}
	tn.setNeighbour(t, c.real.Addr(), moved)
	if err := d.objs.NexthopGen.Put(uint32(0), uint32(1)); err != nil {
		t.Fatal(err)
	}

	ret, got := c.send(c.fromClient(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK}), tn.clientIdx)
	if ret != xdpRedirect {
		t.Fatalf("segment after a new generation: verdict %d, want XDP_REDIRECT (%d)", ret, xdpRedirect)
	}
	if bytes.Equal(first.dstMAC, moved) {
		t.Fatalf("first segment already went to %s", moved)
	}
	if !bytes.Equal(got.dstMAC, moved) {
		t.Errorf("after a new generation the segment went to %s, want the new neighbour %s", got.dstMAC, moved)
	}
}

// TestNextHopWatchFollowsNeighbour checks that a neighbour change moves the
// generation and that the next segment goes to the new address.
func TestNextHopWatchFollowsNeighbour(t *testing.T) {
	tn := newTestNet(t)
	d := tn.load(t, Config{})
	if err := inNS(tn.ns, d.watchNextHops); err != nil {
		t.Fatalf("watchNextHops: %v", err)
	}
	setTestVIP(t, d, false)
	c := newConn(t, tn, d, 50802)
	c.open()
	c.forward(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK})

	before := nextHopGeneration(t, d)
	moved := net.HardwareAddr{0x02, 0, 0, 0, 9, 8}
	tn.setNeighbour(t, c.real.Addr(), moved)
	deadline := time.Now().Add(5 * time.Second)
	for nextHopGeneration(t, d) == before {
		if time.Now().After(deadline) {
			t.Fatalf("next-hop generation still %d 5s after a neighbour change", before)
		}
		time.Sleep(10 * time.Millisecond)
	}

	ret, got := c.send(c.fromClient(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK}), tn.clientIdx)
	if ret != xdpRedirect {
		t.Fatalf("segment after the neighbour change: verdict %d, want XDP_REDIRECT (%d)", ret, xdpRedirect)
	}
	if !bytes.Equal(got.dstMAC, moved) {
		t.Errorf("after the neighbour change the segment went to %s, want %s", got.dstMAC, moved)
	}
}

// TestNextHopCacheChecksMTU checks that a segment longer than any the cached
// lookup checked is checked against the route's MTU again.
func TestNextHopCacheChecksMTU(t *testing.T) {
	tn := newTestNet(t)
	h, err := netlink.NewHandleAt(tn.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByIndex(tn.realIdx)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetMTU(l, 1000); err != nil {
		t.Fatalf("set MTU of %s: %v", l.Attrs().Name, err)
	}

	d := tn.load(t, Config{})
	setTestVIP(t, d, false)
	c := newConn(t, tn, d, 50803)
	c.open()
	c.forward(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK})
	c.reverse(segment{seq: c.rISN + 1, ack: c.isn + 1 + HeaderLen, flags: flagACK})

	before, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	big := c.fromClient(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK, payload: make([]byte, 1000)})
	if ret, _ := tn.run(t, d, tn.clientIdx, big.marshal()); ret != xdpDrop {
		t.Errorf("segment over the MTU of 1000: verdict %d, want XDP_DROP (%d)", ret, xdpDrop)
	}
	after, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if got := after["drop/frag_needed"] - before["drop/frag_needed"]; got != 1 {
		t.Errorf("drop/frag_needed grew by %d, want 1", got)
	}

	// Segments up to the MTU still pass, and the cache keeps checking
	// the long one.
	c.forward(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK, payload: make([]byte, 900)})
	if ret, _ := tn.run(t, d, tn.clientIdx, big.marshal()); ret != xdpDrop {
		t.Errorf("second segment over the MTU: verdict %d, want XDP_DROP (%d)", ret, xdpDrop)
	}
}
