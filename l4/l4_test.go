package l4

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tidegate/tidegate/shared/admin"
	"github.com/tidegate/tidegate/shared/config"
)

func TestExampleConfigLoads(t *testing.T) {
	f, err := config.Load("../deploy/l4.example.yaml")
	if err != nil {
		t.Fatalf("deploy/l4.example.yaml: %v", err)
	}
	if len(f.L4.VIPs) != 2 {
		t.Errorf("example has %d VIPs, want 2", len(f.L4.VIPs))
	}
}

func parseFile(t *testing.T, doc string) *config.File {
	t.Helper()
	f, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, doc)
	}
	return f
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestServerReloadBindFailure reloads with a VIP on a busy address: Reload
// must fail and leave the running VIPs as they were.
func TestServerReloadBindFailure(t *testing.T) {
	vipA := freeAddr(t)
	doc := fmt.Sprintf("l4:\n  vips:\n    - {name: a, address: %q, reals: [{address: \"127.0.0.1:1\"}]}\n", vipA)
	s, err := New(parseFile(t, doc), discardLogger(), admin.New("", false, discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = s.Drain(ctx)
	})

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	doc2 := doc + fmt.Sprintf("    - {name: b, address: %q, reals: [{address: \"127.0.0.1:2\"}]}\n", busy.Addr())
	err = s.Reload(parseFile(t, doc2))
	if err == nil || !strings.Contains(err.Error(), busy.Addr().String()) {
		t.Fatalf("Reload with a busy address = %v, want a listen error naming it", err)
	}
	if s.Balancer().VIP("b") != nil {
		t.Error("failed reload added VIP b to the control plane")
	}
	// The real refuses, so the L4 resets the connection; a refused connect
	// would mean the VIP's listener is gone.
	c, err := net.DialTimeout("tcp", vipA, time.Second)
	if errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("VIP a stopped accepting after a failed reload: %v", err)
	}
	if c != nil {
		c.Close()
	}
}

func TestXDPModeNeedsInterfaces(t *testing.T) {
	doc := "l4:\n  dataplane: {mode: xdp}\n  vips:\n    - {name: a, address: \"127.0.0.1:0\", reals: [{address: \"127.0.0.1:1\"}]}\n"
	_, err := config.Parse([]byte(doc))
	if err == nil || !strings.Contains(err.Error(), "l4.dataplane.interfaces") {
		t.Errorf("Parse with dataplane.mode xdp and no interfaces: err = %v, want an error naming l4.dataplane.interfaces", err)
	}
}
