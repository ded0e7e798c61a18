package l4

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/tidegate/tidegate/shared/admin"
	"github.com/tidegate/tidegate/shared/config"
)

func dataplaneConfig(t *testing.T, mode, vip string, extra string) *config.File {
	t.Helper()
	f, err := config.Parse([]byte(fmt.Sprintf(`
l4:
  dataplane:
    mode: %s
    interfaces: [tgxnone0]
    snat_address: 10.0.0.1
    pin_path: %s
%s
  vips:
    - {name: web, address: %q, reals: [{address: "127.0.0.1:1"}]}
`, mode, t.TempDir(), extra, vip)))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return f
}

func freeVIP(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func newTestServer(t *testing.T, f *config.File) *Server {
	t.Helper()
	logger := slog.New(slog.DiscardHandler)
	s, err := New(f, logger, admin.New("", false, logger))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func TestAutoFallsBackToUserspace(t *testing.T) {
	vip := freeVIP(t)
	s := newTestServer(t, dataplaneConfig(t, "auto", vip, ""))
	if err := s.Start(); err != nil {
		t.Fatalf("Start in auto mode without a usable interface: %v", err)
	}
	defer s.Drain(context.Background())

	if s.fast != nil {
		t.Errorf("XDP engine attached to a missing interface")
	}
	c, err := net.Dial("tcp", vip)
	if errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("userspace engine not listening on %s: %v", vip, err)
	}
	if err == nil {
		c.Close()
	}
}

func TestModeXDPFailsAtStart(t *testing.T) {
	s := newTestServer(t, dataplaneConfig(t, "xdp", freeVIP(t), ""))
	err := s.Start()
	if err == nil {
		s.Drain(context.Background())
		t.Fatal("Start in xdp mode without a usable interface succeeded")
	}
	if os.Geteuid() == 0 && !strings.Contains(err.Error(), "tgxnone0") {
		t.Errorf("Start error %q does not name the missing interface", err)
	}
}

func TestReloadRejectsDataplaneChange(t *testing.T) {
	vip := freeVIP(t)
	s := newTestServer(t, dataplaneConfig(t, "userspace", vip, ""))
	changed := dataplaneConfig(t, "userspace", vip, "    flow_table_size: 1000")
	if err := s.Reload(changed); err == nil || !strings.Contains(err.Error(), "dataplane settings changed") {
		t.Errorf("Reload with another flow_table_size: err = %v, want a restart-needed error", err)
	}
}
