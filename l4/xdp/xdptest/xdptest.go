//go:build linux

// Package xdptest contains XDP programs for tests of the balancer: a
// pass-through for veth peers, and a one-time drop that simulates packet
// loss on kernels without netem.
package xdptest

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Programs is a loaded copy of the test programs. Every interface it
// attaches to shares one drop rule and one drop counter.
type Programs struct {
	objs  testprogsObjects
	links []link.Link
}

// Load loads the test programs.
func Load() (*Programs, error) {
	p := &Programs{}
	if err := loadTestprogsObjects(&p.objs, nil); err != nil {
		return nil, fmt.Errorf("xdptest: load: %w", err)
	}
	return p, nil
}

// AttachPass attaches the pass-through program in native mode to the
// interface with ifindex, in the calling thread's network namespace.
func (p *Programs) AttachPass(ifindex int) error {
	return p.attach(p.objs.XdpPass, ifindex)
}

// AttachDropOnce attaches the dropping program in native mode. It passes
// everything until [Programs.DropNext] arms it.
func (p *Programs) AttachDropOnce(ifindex int) error {
	return p.attach(p.objs.XdpDropOnce, ifindex)
}

func (p *Programs) attach(prog *ebpf.Program, ifindex int) error {
	l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPDriverMode})
	if err != nil {
		return fmt.Errorf("xdptest: attach to ifindex %d: %w", ifindex, err)
	}
	p.links = append(p.links, l)
	return nil
}

// DropNext arms the drop program: it drops the next n TCP segments to
// dport whose payload length lies within [minPayload, maxPayload].
func (p *Programs) DropNext(n uint32, dport uint16, minPayload, maxPayload uint32) error {
	r := testprogsDropRule{Remaining: n, Dport: dport, MinPayload: minPayload, MaxPayload: maxPayload}
	if err := p.objs.DropRules.Update(uint32(0), &r, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("xdptest: set drop rule: %w", err)
	}
	return nil
}

// Dropped returns the number of frames dropped so far.
func (p *Programs) Dropped() (uint64, error) {
	var n uint64
	if err := p.objs.Dropped.Lookup(uint32(0), &n); err != nil {
		return 0, fmt.Errorf("xdptest: read drop counter: %w", err)
	}
	return n, nil
}

// Close detaches every program and releases the objects.
func (p *Programs) Close() error {
	for _, l := range p.links {
		l.Close()
	}
	return p.objs.Close()
}
