//go:build linux

package xdp

import (
	"bytes"
	"fmt"
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
//   - forward: repeat=1 per call on a fresh copy of an established client
//     segment of 1400 bytes, so every run takes the forward path. The
//     metric includes one ktime_get_ns read and the kernel's loop setup.
//   - empty: the same calls through a program that only returns XDP_PASS,
//     which measures that timer overhead. forward minus empty is the cost
//     of the forward path.
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
	c := newConn(b, tn, d, 50700)
	c.open()
	c.forward(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK})
	c.reverse(segment{seq: c.rISN + 1, ack: c.isn + 1 + HeaderLen, flags: flagACK})
	frame := c.fromClient(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK | flagPSH,
		payload: bytes.Repeat([]byte{0xab}, 1400)}).marshal()

	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.XDP,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, int32(xdpPass)), asm.Return()},
		License:      "Dual MIT/GPL",
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { empty.Close() })

	b.Run("forward", func(b *testing.B) {
		delta := measureKernelRuns(b, tn, d, d.objs.XdpLb, frame, 1, xdpRedirect)
		if got := delta["packets/forward"]; got != uint64(b.N) {
			b.Fatalf("forward packets counted %d, want %d: not the forward path", got, b.N)
		}
	})
	b.Run("empty", func(b *testing.B) {
		measureKernelRuns(b, tn, d, empty, frame, 1, xdpPass)
	})
	b.Run("repeat", func(b *testing.B) {
		const repeat = 100
		delta := measureKernelRuns(b, tn, d, d.objs.XdpLb, frame, repeat, 0)
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

// measureKernelRuns calls kernelTestRun b.N times, reports the kernel's mean
// "kernel-ns/run" and returns the change of the dataplane's counters. A
// non-zero want is checked against each verdict, which with repeat > 1 is
// the verdict of the last run only.
func measureKernelRuns(b *testing.B, tn *testNet, d *Dataplane, prog *ebpf.Program,
	frame []byte, repeat uint32, want uint32) map[string]uint64 {
	b.Helper()
	before, err := d.Stats()
	if err != nil {
		b.Fatal(err)
	}

	var totalNS, calls uint64
	err = inNS(tn.ns, func() error {
		for b.Loop() {
			verdict, ns, err := kernelTestRun(prog, frame, tn.clientIdx, repeat)
			if err != nil {
				return err
			}
			if want != 0 && verdict != want {
				return fmt.Errorf("verdict %d, want %d", verdict, want)
			}
			totalNS += uint64(ns)
			calls++
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
