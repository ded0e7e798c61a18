// Package xdp is the L4 fast-path engine: it loads the XDP balancer built
// from bpf/xdp_lb.c, attaches it to interfaces, and owns its maps.
//
// The program is a full NAT. A SYN to a VIP picks a real from the VIP's
// Maglev table, takes a source port for the SNAT address from a free-port
// queue and records the flow in both directions. The program inserts a PROXY
// v2 header at the start of the client's stream and moves sequence and
// acknowledgment numbers by its length, so the real receives the bytes the
// userspace engine would send. Whatever the program cannot handle, it passes to the
// kernel, where the userspace engine listening on the same VIP takes it.
//
// [Dataplane] is the whole API; the generated lb* types stay inside the
// package.
package xdp
