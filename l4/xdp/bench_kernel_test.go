//go:build linux

package xdp

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// testRunAttr is the BPF_PROG_TEST_RUN member of union bpf_attr
// (include/uapi/linux/bpf.h). cilium/ebpf v0.22 returns the kernel's
// duration only from Program.Benchmark, which sets no context, so the
// program would see the namespace's loopback as its ingress interface.
type testRunAttr struct {
	progFD      uint32
	retval      uint32
	dataSizeIn  uint32
	dataSizeOut uint32
	dataIn      uint64
	dataOut     uint64
	repeat      uint32
	duration    uint32
	ctxSizeIn   uint32
	ctxSizeOut  uint32
	ctxIn       uint64
	ctxOut      uint64
	flags       uint32
	cpu         uint32
	batchSize   uint32
	_           uint32
}

// kernelTestRun runs prog repeat times on one copy of frame inside the
// kernel and returns the last verdict and the kernel's mean nanoseconds per
// run. The kernel times the loop with ktime_get_ns, so the figure excludes
// the system call but includes one clock read per call.
func kernelTestRun(prog *ebpf.Program, frame []byte, ifindex int, repeat uint32) (uint32, uint32, error) {
	ctx := xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: uint32(ifindex)}
	attr := testRunAttr{
		progFD:     uint32(prog.FD()),
		dataSizeIn: uint32(len(frame)),
		dataIn:     uint64(uintptr(unsafe.Pointer(&frame[0]))),
		repeat:     repeat,
		ctxSizeIn:  uint32(unsafe.Sizeof(ctx)),
		ctxIn:      uint64(uintptr(unsafe.Pointer(&ctx))),
	}
	for {
		_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN,
			uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		switch errno {
		case 0:
			return attr.retval, attr.duration, nil
		case unix.EINTR:
			// A pending signal stops the kernel's loop. Issuing the call
			// again starts over on a fresh copy of frame.
			continue
		default:
			return 0, 0, fmt.Errorf("bpf prog test run: %w", errno)
		}
	}
}

// BenchmarkProgramKernelTimed measures the program without the system call
// by reading the duration the kernel reports for BPF_PROG_TEST_RUN.
//
// Each path case calls the program with repeat=1 on a fresh copy of one
// frame, so every run takes the same path, and checks through the counters
// that it did. The metric includes one ktime_get_ns read and the kernel's
// loop setup, which the empty case measures alone: a case minus empty is
// the cost of its path.
//
//   - forward: an established client segment of 1400 bytes.
//   - forward_uncached: the same, with the next-hop generation moved
//     before each run, so that every run calls bpf_fib_lookup and refills
//     the cache, the worst case of the next-hop cache.
//   - reverse: an established segment of the real with 1400 bytes and no
//     TCP options.
//   - reverse_ts: the same with the timestamp option as Linux sends it
//     (NOP, NOP, timestamps), the common reverse segment.
//   - reverse_sack: timestamps and a SACK option with two blocks.
//   - header: the first client data segment, 1400 bytes, before the real
//     has acknowledged the header, so every run inserts the PROXY header.
//   - syn: a SYN that starts a new flow. Between runs, untimed, the test
//     removes the flow and returns its port.
//   - miss: a client ACK that matches no flow and goes to the kernel.
//   - empty: a program that only returns XDP_PASS.
//   - repeat: the kernel's own loop (repeat=100) on one buffer. Without
//     BPF_F_TEST_XDP_LIVE_FRAMES the kernel reruns the program on the frame
//     the first run rewrote to SNAT to real, so only the first run forwards.
//     The counters show which path the other runs took.
//
// NOTE: each repeat call takes about 17 ms of wall time on Linux 6.18 while
// the kernel reports nanoseconds per run. The likely cause is the XDP
// dispatcher update the kernel makes around a repeated non-live run, so
// keep -benchtime small (for example 200x) for the repeat case.
func BenchmarkProgramKernelTimed(b *testing.B) {
	tn := newTestNet(b)
	d := tn.load(b, Config{})
	setTestVIP(b, d, false)
	payload := bytes.Repeat([]byte{0xab}, 1400)
	ts := []byte{1, 1, 8, 10, 0, 0, 0x10, 0, 0, 0, 0x20, 0}

	// An established flow, whose PROXY header the real has acknowledged.
	c := newConn(b, tn, d, 50700)
	c.open()
	c.forward(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK})
	c.reverse(segment{seq: c.rISN + 1, ack: c.isn + 1 + HeaderLen, flags: flagACK})
	ack := c.isn + 1 + HeaderLen + 1400
	sack := append(append([]byte(nil), ts...), 1, 1)
	sack = append(sack, optSACK(ack+1400, ack+2800, ack+4200, ack+5600)...)

	// A flow whose header the real has not acknowledged yet.
	h := newConn(b, tn, d, 50701)
	h.open()

	// A client port with no flow, and one whose SYN starts a new flow.
	miss := newConn(b, tn, d, 50702)
	syn := newConn(b, tn, d, 50703)

	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, int32(xdpPass)), asm.Return()},
		License:      "Dual MIT/GPL",
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { empty.Close() })

	cases := []struct {
		name    string
		prog    *ebpf.Program
		frame   segment
		ifindex int
		verdict uint32
		counter string // must grow by one per run; empty skips the check
		between func() error
	}{
		{name: "forward", frame: c.fromClient(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK | flagPSH, payload: payload}),
			ifindex: tn.clientIdx, verdict: xdpRedirect, counter: "packets/forward"},
		{name: "forward_uncached", frame: c.fromClient(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK | flagPSH, payload: payload}),
			ifindex: tn.clientIdx, verdict: xdpRedirect, counter: "packets/forward", between: func() error { return bumpNextHopGeneration(d) }},
		{name: "reverse", frame: c.fromReal(segment{seq: c.rISN + 1, ack: ack, flags: flagACK | flagPSH, payload: payload}),
			ifindex: tn.realIdx, verdict: xdpRedirect, counter: "packets/reverse"},
		{name: "reverse_ts", frame: c.fromReal(segment{seq: c.rISN + 1, ack: ack, flags: flagACK | flagPSH, options: ts, payload: payload}),
			ifindex: tn.realIdx, verdict: xdpRedirect, counter: "packets/reverse"},
		{name: "reverse_sack", frame: c.fromReal(segment{seq: c.rISN + 1, ack: ack, flags: flagACK, options: sack}),
			ifindex: tn.realIdx, verdict: xdpRedirect, counter: "packets/reverse"},
		{name: "header", frame: h.fromClient(segment{seq: h.isn + 1, ack: h.rISN + 1, flags: flagACK | flagPSH, payload: payload}),
			ifindex: tn.clientIdx, verdict: xdpRedirect, counter: "header_inserts"},
		{name: "syn", frame: syn.fromClient(segment{seq: syn.isn, flags: flagSYN, options: append(optMSS(1460), 4, 2, 1, 1)}),
			ifindex: tn.clientIdx, verdict: xdpRedirect, counter: "new_flows", between: func() error { return removeFlow(d, syn.client) }},
		{name: "miss", frame: miss.fromClient(segment{seq: miss.isn + 1, ack: 1, flags: flagACK, payload: payload}),
			ifindex: tn.clientIdx, verdict: xdpPass, counter: "pass/no_flow"},
		{name: "empty", prog: empty, frame: c.fromClient(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK | flagPSH, payload: payload}),
			ifindex: tn.clientIdx, verdict: xdpPass},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			prog := tc.prog
			if prog == nil {
				prog = d.objs.XdpLb
			}
			delta := measureKernelRuns(b, tn, d, prog, tc.frame.marshal(), tc.ifindex, 1, tc.verdict, tc.between)
			if tc.counter == "" {
				return
			}
			if got := delta[tc.counter]; got != uint64(b.N) {
				b.Fatalf("%s counted %d in %d runs: not the path this case measures", tc.counter, got, b.N)
			}
		})
	}
	b.Run("repeat", func(b *testing.B) {
		const repeat = 100
		frame := cases[0].frame.marshal()
		delta := measureKernelRuns(b, tn, d, d.objs.XdpLb, frame, tn.clientIdx, repeat, 0, nil)
		// A signal makes the kernel restart the loop with a fresh copy of
		// the frame, so a call can forward more than once.
		if got := delta["packets/forward"]; got < uint64(b.N) {
			b.Fatalf("forward packets counted %d, want at least one per call (%d)", got, b.N)
		}
		for name, n := range delta {
			if n > 0 {
				b.Logf("repeat=%d, %d calls: %s += %d", repeat, b.N, name, n)
			}
		}
	})
}

// bumpNextHopGeneration moves the next-hop generation, as a route or
// neighbour change does, which invalidates every cached next hop.
func bumpNextHopGeneration(d *Dataplane) error {
	var gen uint32
	if err := d.objs.NexthopGen.Lookup(uint32(0), &gen); err != nil {
		return fmt.Errorf("read next-hop generation: %w", err)
	}
	return d.objs.NexthopGen.Put(uint32(0), gen+1)
}

// removeFlow deletes both entries of client's flow and returns its SNAT
// port to the free queue, as the sweep does for an expired flow.
func removeFlow(d *Dataplane, client netip.AddrPort) error {
	key := lbFlowKey{
		Saddr: addrToBE(client.Addr()),
		Daddr: addrToBE(vip.Addr()),
		Sport: portToBE(client.Port()),
		Dport: portToBE(vip.Port()),
	}
	var f lbFlow
	if err := d.objs.Flows.Lookup(&key, &f); err != nil {
		return fmt.Errorf("look up flow of %s: %w", client, err)
	}
	if err := d.objs.Flows.Delete(&key); err != nil {
		return fmt.Errorf("delete flow of %s: %w", client, err)
	}
	rev := reverseKeyOf(&f)
	if err := d.objs.Flows.Delete(&rev); err != nil {
		return fmt.Errorf("delete reverse flow of %s: %w", client, err)
	}
	return d.objs.FreePorts.Update(nil, portFromBE(f.Sport), ebpf.UpdateAny)
}

// measureKernelRuns calls kernelTestRun b.N times on frame received on
// ifindex, reports the kernel's mean "kernel-ns/run" and returns the change
// of the dataplane's counters. A non-zero want is checked against each
// verdict, which with repeat > 1 is the verdict of the last run only. A
// non-nil between runs after each call, outside the kernel's timing.
func measureKernelRuns(b *testing.B, tn *testNet, d *Dataplane, prog *ebpf.Program,
	frame []byte, ifindex int, repeat uint32, want uint32, between func() error) map[string]uint64 {
	b.Helper()
	before, err := d.Stats()
	if err != nil {
		b.Fatal(err)
	}

	var totalNS, calls uint64
	err = inNS(tn.ns, func() error {
		for b.Loop() {
			verdict, ns, err := kernelTestRun(prog, frame, ifindex, repeat)
			if err != nil {
				return err
			}
			if want != 0 && verdict != want {
				return fmt.Errorf("verdict %d, want %d", verdict, want)
			}
			totalNS += uint64(ns)
			calls++
			if between != nil {
				if err := between(); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(totalNS)/float64(calls), "kernel-ns/run")

	after, err := d.Stats()
	if err != nil {
		b.Fatal(err)
	}
	delta := make(map[string]uint64, len(after))
	for name, n := range after {
		delta[name] = n - before[name]
	}
	return delta
}
