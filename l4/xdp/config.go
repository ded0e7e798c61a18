//go:build linux

package xdp

import (
	"fmt"
	"net/netip"

	"github.com/tidegate/tidegate/shared/config"
)

// ConfigFrom builds a [Config] from the dataplane section of the L4
// configuration, which [config.Parse] has already defaulted and validated.
func ConfigFrom(d config.Dataplane) (Config, error) {
	if len(d.Interfaces) == 0 {
		return Config{}, fmt.Errorf("xdp: dataplane.interfaces is empty")
	}
	snat, err := netip.ParseAddr(d.SNATAddress)
	if err != nil || !snat.Is4() {
		return Config{}, fmt.Errorf("xdp: dataplane.snat_address %q is not an IPv4 address", d.SNATAddress)
	}
	return Config{
		Interfaces:     d.Interfaces,
		Generic:        d.Generic,
		SNATAddr:       snat,
		PortMin:        uint16(d.SNATPortMin),
		PortMax:        uint16(d.SNATPortMax),
		FlowTableSize:  d.FlowTableSize,
		MaxVIPs:        d.MaxVIPs,
		PinPath:        d.PinPath,
		IdleTimeout:    d.IdleTimeout.D(),
		ClosingTimeout: d.ClosingTimeout.D(),
		SweepInterval:  DefaultSweepInterval,
	}, nil
}
