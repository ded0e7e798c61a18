//go:build linux

package xdp

import (
	"bytes"
	"testing"
)

// FuzzProgram feeds segments with arbitrary flags, numbers, options and
// payloads through an established flow in both directions. Every frame the
// program forwards must have valid checksums and the sender's payload, and
// every frame it passes must be untouched.
func FuzzProgram(f *testing.F) {
	f.Add(true, uint8(flagACK), uint32(1), uint32(1), []byte{}, []byte("hello"))
	f.Add(true, uint8(flagACK|flagPSH), uint32(1), uint32(1), []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}, []byte("x"))
	f.Add(false, uint8(flagACK), uint32(0), uint32(48), append([]byte{1}, optSACK(100, 200, 300, 400)...), []byte{})
	f.Add(false, uint8(flagSYN|flagACK), uint32(0), uint32(1), append(optMSS(1460), 1, 3, 3, 7), []byte{})
	f.Add(true, uint8(flagSYN), uint32(0), uint32(0), []byte{34, 2}, []byte{})
	f.Add(false, uint8(flagACK), uint32(0), uint32(9), []byte{5, 255, 1, 2}, []byte{})
	f.Add(true, uint8(flagFIN|flagACK), uint32(1), uint32(1), []byte{2}, []byte{})

	tn := newTestNet(f)
	d := tn.load(f, Config{})
	setTestVIP(f, d, false)
	c := newConn(f, tn, d, 50500)
	c.open()

	f.Fuzz(func(t *testing.T, fromClient bool, flags uint8, seqOff, ackOff uint32, opts, payload []byte) {
		if len(opts) > 40 {
			opts = opts[:40]
		}
		if len(payload) > 1300 {
			payload = payload[:1300]
		}
		s := segment{flags: flags, options: opts, payload: payload}
		ifindex := tn.clientIdx
		if fromClient {
			s = c.fromClient(s)
			s.seq, s.ack = c.isn+seqOff, c.rISN+ackOff
		} else {
			s = c.fromReal(s)
			s.seq, s.ack = c.rISN+seqOff, c.isn+ackOff
			ifindex = tn.realIdx
		}
		in := s.marshal()
		ret, out := tn.run(t, d, ifindex, in)

		switch ret {
		case xdpPass, xdpDrop:
			if ret == xdpPass && !bytes.Equal(out, in) {
				t.Fatalf("passed frame was modified")
			}
			return
		case xdpRedirect, xdpTX:
		default:
			t.Fatalf("verdict %d is not one the program returns", ret)
		}

		got, err := parseSegment(out)
		if err != nil {
			t.Fatalf("forwarded frame: %v", err)
		}
		if len(got.options) != len(s.marshalOptions()) {
			t.Errorf("options changed length from %d to %d", len(s.marshalOptions()), len(got.options))
		}
		data := got.payload
		if fromClient && len(data) == len(payload)+HeaderLen {
			data = data[HeaderLen:]
		}
		if !bytes.Equal(data, payload) {
			t.Errorf("payload changed: in %x, out %x", payload, got.payload)
		}
	})
}

func (s segment) marshalOptions() []byte {
	o := append([]byte(nil), s.options...)
	for len(o)%4 != 0 {
		o = append(o, 0)
	}
	return o
}
