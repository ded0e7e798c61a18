//go:build linux

package xdp

import (
	"bytes"
	"testing"
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
