//go:build linux

package xdp

import "testing"

func TestLoadPassesVerifier(t *testing.T) {
	requirePrivileged(t)
	d, err := load(Config{SNATAddr: snatAddr, PortMin: 40000, PortMax: 40001, FlowTableSize: 4, MaxVIPs: 1}.withDefaults(), nil)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	d.Close(true)
}
