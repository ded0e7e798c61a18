//go:build linux

package topology

import (
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// AttachXDPPass attaches, in native mode, a program that passes every frame
// to the switch-side peer of each interface of hosts. A frame that an XDP
// program redirects into a veth reaches the other end only when that end
// has an XDP program of its own. The XDP engine on an L4 node therefore
// needs this on the peers of its interfaces. The programs stay attached
// until the topology is torn down.
func (t *Topology) AttachXDPPass(hosts ...*Host) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.passProg == nil {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Name: "tge_xdp_pass",
			Type: ebpf.XDP,
			Instructions: asm.Instructions{
				asm.Mov.Imm(asm.R0, 2), // XDP_PASS
				asm.Return(),
			},
			License: "GPL",
		})
		if err != nil {
			return fmt.Errorf("load XDP pass program: %w", err)
		}
		t.passProg = prog
	}

	for _, h := range hosts {
		for _, ifc := range h.Interfaces {
			err := inNamespace(t.sw, func() error {
				dev, err := net.InterfaceByName(ifc.PeerName)
				if err != nil {
					return err
				}
				l, err := link.AttachXDP(link.XDPOptions{Program: t.passProg, Interface: dev.Index, Flags: link.XDPDriverMode})
				if err != nil {
					return err
				}
				t.xdpLinks = append(t.xdpLinks, l)
				return nil
			})
			if err != nil {
				return fmt.Errorf("attach XDP pass program to %s: %w", ifc.PeerName, err)
			}
		}
	}
	return nil
}

// detachXDP closes the links and program of [Topology.AttachXDPPass]. The
// caller holds t.mu.
func (t *Topology) detachXDP() {
	for _, l := range t.xdpLinks {
		_ = l.Close()
	}
	t.xdpLinks = nil
	if t.passProg != nil {
		_ = t.passProg.Close()
		t.passProg = nil
	}
}
