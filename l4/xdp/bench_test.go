//go:build linux

package xdp

import (
	"bytes"
	"testing"

	"github.com/cilium/ebpf"
)

// BenchmarkProgramForward measures one established client segment of 1400
// bytes through the forward path, including the cost of one
// BPF_PROG_TEST_RUN system call per packet. Each run gets a fresh copy of
// the frame: with RunOptions.Repeat the kernel would run the program again
// on the frame it already rewrote.
func BenchmarkProgramForward(b *testing.B) {
	tn := newTestNet(b)
	d := tn.load(b, Config{})
	setTestVIP(b, d, false)
	c := newConn(b, tn, d, 50600)
	c.open()
	c.forward(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK})
	c.reverse(segment{seq: c.rISN + 1, ack: c.isn + 1 + HeaderLen, flags: flagACK})

	frame := c.fromClient(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK | flagPSH,
		payload: bytes.Repeat([]byte{0xab}, 1400)}).marshal()
	before, err := d.Stats()
	if err != nil {
		b.Fatal(err)
	}

	var runs uint64
	b.ReportAllocs()
	err = inNS(tn.ns, func() error {
		out := make([]byte, len(frame)+256)
		opts := &ebpf.RunOptions{Data: frame, DataOut: out, Context: xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: uint32(tn.clientIdx)}}
		for b.Loop() {
			opts.DataOut = out
			if _, err := d.objs.XdpLb.Run(opts); err != nil {
				return err
			}
			runs++
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}

	after, err := d.Stats()
	if err != nil {
		b.Fatal(err)
	}
	if got := after["packets/forward"] - before["packets/forward"]; got != runs {
		b.Fatalf("forward packets counted %d, want %d: the benchmark did not measure the forward path", got, runs)
	}
}
