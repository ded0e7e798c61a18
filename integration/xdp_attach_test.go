//go:build integration && linux

package integration

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/tidegate/tidegate/l4/xdp"
)

// TestXDPFailedAttachLeavesNothing attaches the dataplane to two links
// while the second already has an XDP program: the first attachment and
// its pin must be gone afterwards.
func TestXDPFailedAttachLeavesNothing(t *testing.T) {
	n := newXDPNet(t, false)
	busy := ifindexIn(t, n.l4, "tgxl4a")
	if err := inNS(n.l4, func() error { return n.progs.AttachPass(busy) }); err != nil {
		t.Fatal(err)
	}

	cfg := xdp.Config{
		Interfaces: []string{"tgxl4c", "tgxl4a"},
		SNATAddr:   netip.MustParseAddr(snatHost),
		PortMin:    20000,
		PortMax:    20099,
		PinPath:    n.pinDir,
	}
	err := inNS(n.l4, func() error {
		dp, err := xdp.Open(cfg, nil, nil)
		if err == nil {
			dp.Close(true)
		}
		return err
	})
	if err == nil {
		t.Fatal("Open succeeded on a link that already has an XDP program")
	}
	t.Logf("Open: %v", err)

	if xdpAttached(t, n.l4, "tgxl4c") {
		t.Errorf("tgxl4c keeps the XDP program of a failed Open")
	}
	if _, err := os.Stat(filepath.Join(n.pinDir, "links", "tgxl4c")); !os.IsNotExist(err) {
		t.Errorf("link pin of tgxl4c remains after a failed Open (stat: %v)", err)
	}
}
