//go:build linux

package xdp

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/pires/go-proxyproto"

	"github.com/tidegate/tidegate/l4/maglev"
	"github.com/tidegate/tidegate/l4/proxyheader"
)

const (
	xdpDrop     = 1
	xdpPass     = 2
	xdpTX       = 3
	xdpRedirect = 4
)

func setTestVIP(t testing.TB, d *Dataplane, affinity bool) *maglev.Table {
	t.Helper()
	table, err := maglev.New([]maglev.Backend{{ID: real1.String(), Weight: 1}, {ID: real2.String(), Weight: 1}}, 13)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.SetVIP(vip, []netip.AddrPort{real1, real2}, table, affinity); err != nil {
		t.Fatalf("SetVIP: %v", err)
	}
	return table
}

// conn drives one client connection through the program.
type conn struct {
	t      testing.TB
	tn     *testNet
	d      *Dataplane
	client netip.AddrPort
	isn    uint32
	real   netip.AddrPort // chosen real, from the SYN
	snat   netip.AddrPort // SNAT address and port, from the SYN
	rISN   uint32         // the real's ISN
}

func (c *conn) fromClient(s segment) segment {
	s.srcMAC, s.dstMAC = clientMAC, c.tn.l4ClientMAC
	s.src, s.dst = c.client, vip
	return s
}

func (c *conn) fromReal(s segment) segment {
	s.srcMAC, s.dstMAC = realMAC, c.tn.l4RealMAC
	s.src, s.dst = c.real, c.snat
	return s
}

// send runs s through the program and returns the verdict and the parsed,
// checksum-verified output.
func (c *conn) send(s segment, ifindex int) (uint32, segment) {
	c.t.Helper()
	ret, out := c.tn.run(c.t, c.d, ifindex, s.marshal())
	got, err := parseSegment(out)
	if err != nil {
		c.t.Fatalf("output frame: %v", err)
	}
	return ret, got
}

func (c *conn) forward(s segment) segment {
	c.t.Helper()
	ret, got := c.send(c.fromClient(s), c.tn.clientIdx)
	if ret != xdpRedirect {
		c.t.Fatalf("client segment seq=%d: verdict %d, want XDP_REDIRECT (%d)", s.seq, ret, xdpRedirect)
	}
	if got.src != c.snat || got.dst != c.real {
		c.t.Fatalf("client segment went %s -> %s, want %s -> %s", got.src, got.dst, c.snat, c.real)
	}
	if !bytes.Equal(got.dstMAC, realMAC) && !bytes.Equal(got.dstMAC, real2MAC) {
		c.t.Errorf("destination MAC %s is not a real's", got.dstMAC)
	}
	if !bytes.Equal(got.srcMAC, c.tn.l4RealMAC) {
		c.t.Errorf("source MAC %s, want the L4's %s", got.srcMAC, c.tn.l4RealMAC)
	}
	return got
}

func (c *conn) reverse(s segment) segment {
	c.t.Helper()
	ret, got := c.send(c.fromReal(s), c.tn.realIdx)
	if ret != xdpRedirect {
		c.t.Fatalf("real segment: verdict %d, want XDP_REDIRECT (%d)", ret, xdpRedirect)
	}
	if got.src != vip || got.dst != c.client {
		c.t.Fatalf("real segment went %s -> %s, want %s -> %s", got.src, got.dst, vip, c.client)
	}
	if !bytes.Equal(got.dstMAC, clientMAC) {
		c.t.Errorf("destination MAC %s, want the client's %s", got.dstMAC, clientMAC)
	}
	return got
}

// open sends the SYN and the SYN-ACK and returns the SYN-ACK the client
// receives.
func (c *conn) open() segment {
	c.t.Helper()
	ret, syn := c.send(c.fromClient(segment{seq: c.isn, flags: flagSYN, options: optMSS(1460)}), c.tn.clientIdx)
	if ret != xdpRedirect {
		c.t.Fatalf("SYN: verdict %d, want XDP_REDIRECT", ret)
	}
	c.real, c.snat = syn.dst, syn.src
	if syn.seq != c.isn {
		c.t.Errorf("SYN seq = %d, want the client's ISN %d", syn.seq, c.isn)
	}
	return c.reverse(segment{seq: c.rISN, ack: c.isn + 1, flags: flagSYN | flagACK,
		options: append(optMSS(1460), 4, 2, 1, 1)})
}

func newConn(t testing.TB, tn *testNet, d *Dataplane, port uint16) *conn {
	return &conn{t: t, tn: tn, d: d, client: netip.AddrPortFrom(clientAddr, port), isn: 1_000_000 + uint32(port), rISN: 7_000_000}
}

func checkHeader(t *testing.T, payload []byte, client netip.AddrPort) []byte {
	t.Helper()
	if len(payload) < HeaderLen {
		t.Fatalf("payload of %d bytes is shorter than the PROXY header (%d)", len(payload), HeaderLen)
	}
	h, err := proxyproto.Read(bufioReader(payload[:HeaderLen]))
	if err != nil {
		t.Fatalf("parse PROXY header: %v", err)
	}
	if got := h.SourceAddr.String(); got != client.String() {
		t.Errorf("PROXY source = %s, want %s", got, client)
	}
	if got := h.DestinationAddr.String(); got != vip.String() {
		t.Errorf("PROXY destination = %s, want %s", got, vip)
	}
	tlvs, err := h.TLVs()
	if err != nil {
		t.Fatalf("PROXY TLVs: %v", err)
	}
	var uid []byte
	for _, tlv := range tlvs {
		if tlv.Type == proxyproto.PP2_TYPE_UNIQUE_ID {
			uid = tlv.Value
		}
	}
	if len(uid) != 16 {
		t.Errorf("unique ID TLV = %x, want 16 bytes", uid)
	}
	return uid
}

func TestForwardSYNPicksMaglevReal(t *testing.T) {
	tn := newTestNet(t)
	d := tn.load(t, Config{})
	table := setTestVIP(t, d, false)

	reals := []netip.AddrPort{real1, real2}
	seen := map[netip.AddrPort]int{}
	ports := map[uint16]bool{}
	for p := uint16(50000); p < 50040; p++ {
		c := newConn(t, tn, d, p)
		ret, syn := c.send(c.fromClient(segment{seq: c.isn, flags: flagSYN, options: optMSS(1460)}), tn.clientIdx)
		if ret != xdpRedirect {
			t.Fatalf("SYN from port %d: verdict %d, want XDP_REDIRECT", p, ret)
		}
		want := reals[table.Lookup(maglev.HashFlow(c.client, vip))]
		if syn.dst != want {
			t.Errorf("SYN from port %d went to %s, the Go Maglev lookup picks %s", p, syn.dst, want)
		}
		if syn.src.Addr() != snatAddr {
			t.Errorf("SYN source address = %s, want the SNAT address %s", syn.src.Addr(), snatAddr)
		}
		if syn.src.Port() < 40000 || syn.src.Port() > 40063 {
			t.Errorf("SYN source port %d is outside the SNAT range 40000-40063", syn.src.Port())
		}
		if ports[syn.src.Port()] {
			t.Errorf("SNAT port %d handed out twice", syn.src.Port())
		}
		ports[syn.src.Port()] = true
		if findOption(syn.options, 2) == nil {
			t.Errorf("SYN lost its MSS option: %x", syn.options)
		}
		seen[syn.dst]++
	}
	if len(seen) != 2 {
		t.Errorf("40 flows reached %d reals (%v), want both", len(seen), seen)
	}
}

func TestClientAffinityPicksOneReal(t *testing.T) {
	tn := newTestNet(t)
	d := tn.load(t, Config{})
	table := setTestVIP(t, d, true)

	want := []netip.AddrPort{real1, real2}[table.Lookup(maglev.HashClient(clientAddr))]
	for p := uint16(50000); p < 50010; p++ {
		c := newConn(t, tn, d, p)
		c.open()
		if c.real != want {
			t.Errorf("flow from port %d went to %s, want %s for every port", p, c.real, want)
		}
	}
}

func TestSynAckClampsMSS(t *testing.T) {
	tn := newTestNet(t)
	d := tn.load(t, Config{})
	setTestVIP(t, d, false)
	c := newConn(t, tn, d, 50000)

	synack := c.open()
	if synack.ack != c.isn+1 {
		t.Errorf("SYN-ACK ack = %d, want isn+1 = %d", synack.ack, c.isn+1)
	}
	if synack.seq != c.rISN {
		t.Errorf("SYN-ACK seq = %d, want the real's ISN %d", synack.seq, c.rISN)
	}
	mss := findOption(synack.options, 2)
	if len(mss) != 2 {
		t.Fatalf("SYN-ACK options %x have no MSS", synack.options)
	}
	if got := binary.BigEndian.Uint16(mss); got != 1460-HeaderLen {
		t.Errorf("SYN-ACK MSS = %d, want %d", got, 1460-HeaderLen)
	}
}

func TestHeaderIntoPureACK(t *testing.T) {
	tn := newTestNet(t)
	d := tn.load(t, Config{})
	setTestVIP(t, d, false)
	c := newConn(t, tn, d, 50001)
	c.open()

	ack := c.forward(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK})
	if ack.seq != c.isn+1 {
		t.Errorf("handshake ACK seq = %d, want isn+1 = %d", ack.seq, c.isn+1)
	}
	if len(ack.payload) != HeaderLen {
		t.Fatalf("handshake ACK carries %d bytes, want the %d-byte header", len(ack.payload), HeaderLen)
	}
	uid := checkHeader(t, ack.payload, c.client)

	// The same segment again, as after a loss, carries the same header.
	again := c.forward(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK})
	if !bytes.Equal(again.payload, ack.payload) {
		t.Errorf("retransmitted header differs:\n%x\n%x", again.payload, ack.payload)
	}

	// A second connection gets another unique ID.
	c2 := newConn(t, tn, d, 50002)
	c2.open()
	ack2 := c2.forward(segment{seq: c2.isn + 1, ack: c2.rISN + 1, flags: flagACK})
	if uid2 := checkHeader(t, ack2.payload, c2.client); bytes.Equal(uid, uid2) {
		t.Errorf("two connections share the unique ID %x", uid)
	}
}

func TestHeaderMatchesUserspaceEngine(t *testing.T) {
	tn := newTestNet(t)
	d := tn.load(t, Config{})
	setTestVIP(t, d, false)
	c := newConn(t, tn, d, 50012)
	c.open()

	ack := c.forward(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK})
	uid := checkHeader(t, ack.payload, c.client)
	if len(uid) != proxyheader.IDLen {
		t.Fatalf("unique ID of %d bytes, want %d", len(uid), proxyheader.IDLen)
	}
	want, err := proxyheader.Build(2, c.client, vip, proxyheader.ID(uid))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ack.payload, want) {
		t.Errorf("XDP header differs from the userspace engine's for the same ID:\nxdp       %x\nuserspace %x", ack.payload, want)
	}
}

func TestHeaderIntoFullSizeSegment(t *testing.T) {
	tn := newTestNet(t)
	d := tn.load(t, Config{})
	setTestVIP(t, d, false)
	c := newConn(t, tn, d, 50003)
	c.open()

	// A full-size first segment after the MSS clamp, with a timestamp
	// option, so that the headers plus the PROXY header fill 1500 bytes.
	ts := []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}
	data := bytes.Repeat([]byte("0123456789abcdef"), 100)[:1460-HeaderLen-len(ts)]
	seg := c.forward(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK | flagPSH, options: ts, payload: data})
	if seg.seq != c.isn+1 {
		t.Errorf("first segment seq = %d, want isn+1", seg.seq)
	}
	checkHeader(t, seg.payload, c.client)
	if !bytes.Equal(seg.payload[HeaderLen:], data) {
		t.Errorf("payload after the header differs from the client's data")
	}
	if !bytes.Equal(seg.options, ts) {
		t.Errorf("TCP options = %x, want %x unchanged", seg.options, ts)
	}
	if ip := 20 + 20 + len(ts) + len(seg.payload); ip != 1500 {
		t.Errorf("IPv4 packet is %d bytes, want exactly 1500", ip)
	}
}

func TestSequenceAndACKTranslation(t *testing.T) {
	tn := newTestNet(t)
	d := tn.load(t, Config{})
	setTestVIP(t, d, false)
	c := newConn(t, tn, d, 50004)
	c.open()

	data := []byte("hello, real")
	first := c.forward(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK | flagPSH, payload: data})
	checkHeader(t, first.payload, c.client)

	// The real acknowledges part of the header: the client sees nothing
	// of its own data acknowledged.
	part := c.reverse(segment{seq: c.rISN + 1, ack: c.isn + 1 + 20, flags: flagACK})
	if part.ack != c.isn+1 {
		t.Errorf("ack inside the header became %d, want the clamp isn+1 = %d", part.ack, c.isn+1)
	}

	// Before the header is acknowledged, a segment at isn+1 still gets it.
	again := c.forward(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK | flagPSH, payload: data})
	if len(again.payload) != HeaderLen+len(data) {
		t.Errorf("retransmission carries %d bytes, want header and data (%d)", len(again.payload), HeaderLen+len(data))
	}

	// The real acknowledges the header and the data.
	full := c.reverse(segment{seq: c.rISN + 1, ack: c.isn + 1 + HeaderLen + uint32(len(data)), flags: flagACK})
	if full.ack != c.isn+1+uint32(len(data)) {
		t.Errorf("ack = %d, want isn+1+len(data) = %d", full.ack, c.isn+1+uint32(len(data)))
	}

	// Once acknowledged, the header is never inserted again, and every
	// client sequence number moves by its length, isn+1 included.
	retx := c.forward(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK | flagPSH, payload: data})
	if len(retx.payload) != len(data) {
		t.Errorf("late retransmission carries %d bytes, want only the data (%d)", len(retx.payload), len(data))
	}
	if retx.seq != c.isn+1+HeaderLen {
		t.Errorf("late retransmission seq = %d, want %d", retx.seq, c.isn+1+HeaderLen)
	}
	next := c.forward(segment{seq: c.isn + 1 + uint32(len(data)), ack: c.rISN + 1, flags: flagACK, payload: []byte("more")})
	if next.seq != c.isn+1+uint32(len(data))+HeaderLen {
		t.Errorf("next segment seq = %d, want %d", next.seq, c.isn+1+uint32(len(data))+HeaderLen)
	}
	if next.ack != c.rISN+1 {
		t.Errorf("client ack changed to %d, want %d", next.ack, c.rISN+1)
	}

	// The real's own sequence numbers pass unchanged.
	down := c.reverse(segment{seq: c.rISN + 1, ack: c.isn + 1 + HeaderLen, flags: flagACK | flagPSH, payload: []byte("reply")})
	if down.seq != c.rISN+1 || string(down.payload) != "reply" {
		t.Errorf("reply seq=%d payload=%q, want seq=%d payload=\"reply\"", down.seq, down.payload, c.rISN+1)
	}
}

func TestSACKTranslation(t *testing.T) {
	tn := newTestNet(t)
	d := tn.load(t, Config{})
	setTestVIP(t, d, false)
	c := newConn(t, tn, d, 50005)
	c.open()
	c.forward(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK})
	base := c.isn + 1 + HeaderLen

	tests := []struct {
		name string
		pre  []byte // options before the SACK option, sets its alignment
	}{
		{"aligned", []byte{1, 1}},
		{"odd offset", []byte{1}},
		{"after timestamps", []byte{1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 8, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c.t = t
			edges := []uint32{base + 1000, base + 2000, base + 3000, base + 4000}
			opts := append(append([]byte(nil), tc.pre...), optSACK(edges...)...)
			got := c.reverse(segment{seq: c.rISN + 1, ack: base, flags: flagACK, options: opts})
			if got.ack != c.isn+1 {
				t.Errorf("ack = %d, want %d", got.ack, c.isn+1)
			}
			sack := findOption(got.options, 5)
			if len(sack) != 16 {
				t.Fatalf("options %x have no 2-block SACK", got.options)
			}
			for i, e := range edges {
				if v := binary.BigEndian.Uint32(sack[4*i:]); v != e-HeaderLen {
					t.Errorf("SACK edge %d = %d, want %d", i, v, e-HeaderLen)
				}
			}
		})
	}

	// Before the header is acknowledged, edges inside it clamp to isn+1.
	c2 := newConn(t, tn, d, 50006)
	c2.t = t
	c2.open()
	got := c2.reverse(segment{seq: c2.rISN + 1, ack: c2.isn + 1, flags: flagACK, options: append([]byte{1, 1}, optSACK(c2.isn+10, c2.isn+1+HeaderLen+5)...)})
	sack := findOption(got.options, 5)
	if len(sack) != 8 {
		t.Fatalf("options %x have no 1-block SACK", got.options)
	}
	if v := binary.BigEndian.Uint32(sack); v != c2.isn+1 {
		t.Errorf("SACK left edge inside the header = %d, want the clamp %d", v, c2.isn+1)
	}
	if v := binary.BigEndian.Uint32(sack[4:]); v != c2.isn+1+5 {
		t.Errorf("SACK right edge = %d, want %d", v, c2.isn+1+5)
	}
}

func TestFinAndRstCloseFlow(t *testing.T) {
	tn := newTestNet(t)
	d := tn.load(t, Config{})
	setTestVIP(t, d, false)

	flowState := func(c *conn) uint8 {
		var f lbFlow
		key := lbFlowKey{Saddr: addrToBE(c.client.Addr()), Daddr: addrToBE(vipAddr), Sport: portToBE(c.client.Port()), Dport: portToBE(vip.Port())}
		if err := d.objs.Flows.Lookup(&key, &f); err != nil {
			t.Fatalf("look up forward flow: %v", err)
		}
		var r lbFlow
		rk := reverseKeyOf(&f)
		if err := d.objs.Flows.Lookup(&rk, &r); err != nil {
			t.Fatalf("look up reverse flow: %v", err)
		}
		if r.State != 0 {
			t.Errorf("reverse entry state = %#x, want 0 (state lives in the forward entry)", r.State)
		}
		return f.State
	}

	c := newConn(t, tn, d, 50007)
	c.open()
	c.forward(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK})
	c.reverse(segment{seq: c.rISN + 1, ack: c.isn + 1 + HeaderLen, flags: flagACK})
	fin := c.forward(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK | flagFIN})
	if fin.flags&flagFIN == 0 || fin.seq != c.isn+1+HeaderLen {
		t.Errorf("client FIN: flags %#x seq %d, want FIN at %d", fin.flags, fin.seq, c.isn+1+HeaderLen)
	}
	if s := flowState(c); s&uint8(lbFlowStateFLOW_FIN_CLIENT) == 0 {
		t.Errorf("state after client FIN = %#x, want FIN_CLIENT", s)
	}
	finR := c.reverse(segment{seq: c.rISN + 1, ack: c.isn + 2 + HeaderLen, flags: flagACK | flagFIN})
	if finR.ack != c.isn+2 {
		t.Errorf("real FIN ack = %d, want %d", finR.ack, c.isn+2)
	}
	if s := flowState(c); s&uint8(lbFlowStateFLOW_FIN_REAL) == 0 {
		t.Errorf("state after real FIN = %#x, want FIN_REAL", s)
	}

	// A client RST before the header is acknowledged carries no header
	// and sits behind it.
	c3 := newConn(t, tn, d, 50013)
	c3.open()
	c3.forward(segment{seq: c3.isn + 1, ack: c3.rISN + 1, flags: flagACK})
	crst := c3.forward(segment{seq: c3.isn + 1, ack: c3.rISN + 1, flags: flagRST | flagACK})
	if len(crst.payload) != 0 || crst.seq != c3.isn+1+HeaderLen {
		t.Errorf("client RST: %d payload bytes at seq %d, want none at %d", len(crst.payload), crst.seq, c3.isn+1+HeaderLen)
	}

	c2 := newConn(t, tn, d, 50008)
	c2.open()
	rst := c2.reverse(segment{seq: c2.rISN + 1, ack: c2.isn + 1, flags: flagRST | flagACK})
	if rst.flags&flagRST == 0 {
		t.Errorf("RST lost its flag: %#x", rst.flags)
	}
	if s := flowState(c2); s&uint8(lbFlowStateFLOW_RST) == 0 {
		t.Errorf("state after RST = %#x, want RST", s)
	}

	stats, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if stats["flows_closed"] != 3 {
		t.Errorf("flows_closed = %d, want 3", stats["flows_closed"])
	}
}

// TestPortReuseStartsNewFlow sends a SYN with another ISN on a known flow,
// which is a new connection from a reused client port: it gets a new flow
// with its own SNAT port and unique ID, and the old flow's entries are gone.
func TestPortReuseStartsNewFlow(t *testing.T) {
	tn := newTestNet(t)
	d := tn.load(t, Config{})
	setTestVIP(t, d, false)
	c := newConn(t, tn, d, 50009)
	c.open()
	ack := c.forward(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK})
	uid := checkHeader(t, ack.payload, c.client)
	c.reverse(segment{seq: c.rISN + 1, ack: c.isn + 1 + HeaderLen, flags: flagACK})

	c.isn += 5_000_000
	old := *c
	c.open()
	if c.real != old.real {
		t.Errorf("reused port with an unchanged table moved from real %s to %s", old.real, c.real)
	}
	if c.snat == old.snat {
		t.Errorf("new connection kept the old SNAT port %s", old.snat)
	}
	ack2 := c.forward(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK})
	if uid2 := checkHeader(t, ack2.payload, c.client); bytes.Equal(uid, uid2) {
		t.Errorf("new connection kept the old unique ID %x", uid)
	}

	// The old reverse entry is gone: a late segment to the old SNAT port
	// has no flow and goes to the kernel.
	late := old.fromReal(segment{seq: c.rISN + 1, ack: old.isn + 1, flags: flagACK})
	if ret, _ := tn.run(t, d, tn.realIdx, late.marshal()); ret != xdpPass {
		t.Errorf("segment to the released SNAT port: verdict %d, want XDP_PASS", ret)
	}
}

// TestPortReuseAfterRealLeaves reuses a client port after the flow's real
// left the table, as when the L4 marks a killed L7 node down: the new
// connection goes to a real still in the table.
func TestPortReuseAfterRealLeaves(t *testing.T) {
	tn := newTestNet(t)
	d := tn.load(t, Config{})
	setTestVIP(t, d, false)
	c := newConn(t, tn, d, 50011)
	c.open()
	gone := c.real
	survivor := real1
	if gone == real1 {
		survivor = real2
	}
	table, err := maglev.New([]maglev.Backend{{ID: survivor.String(), Weight: 1}}, 13)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.SetVIP(vip, []netip.AddrPort{survivor}, table, false); err != nil {
		t.Fatalf("SetVIP: %v", err)
	}

	c.isn += 5_000_000
	c.open()
	if c.real != survivor {
		t.Errorf("reused port went to %s, want the remaining real %s (not %s)", c.real, survivor, gone)
	}
}

// TestTableChangeKeepsEstablishedFlows publishes tables the way the L4
// does when a real goes down and comes back: every real in configuration
// order, the down one with weight 0. Established flows to either real keep
// their real, SNAT port and sequence offset, and get no second header.
func TestTableChangeKeepsEstablishedFlows(t *testing.T) {
	tn := newTestNet(t)
	d := tn.load(t, Config{})
	setTestVIP(t, d, false)

	// Open connections until each real carries one.
	var conns []*conn
	onReal := map[netip.AddrPort]bool{}
	for port := uint16(50100); len(onReal) < 2; port++ {
		if port == 50200 {
			t.Fatalf("100 connections all went to %v", onReal)
		}
		c := newConn(t, tn, d, port)
		c.open()
		checkHeader(t, c.forward(segment{seq: c.isn + 1, ack: c.rISN + 1, flags: flagACK}).payload, c.client)
		c.reverse(segment{seq: c.rISN + 1, ack: c.isn + 1 + HeaderLen, flags: flagACK})
		conns = append(conns, c)
		onReal[c.real] = true
	}

	publish := func(weight1, weight2 int) {
		t.Helper()
		table, err := maglev.New([]maglev.Backend{{ID: real1.String(), Weight: weight1}, {ID: real2.String(), Weight: weight2}}, 13)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.SetVIP(vip, []netip.AddrPort{real1, real2}, table, false); err != nil {
			t.Fatalf("SetVIP with weights %d and %d: %v", weight1, weight2, err)
		}
	}
	sent := uint32(0)
	exchange := func(when string) {
		t.Helper()
		data := []byte("request")
		for _, c := range conns {
			// forward and reverse fail the test if the segment leaves
			// with another real or SNAT port than the SYN got.
			got := c.forward(segment{seq: c.isn + 1 + sent, ack: c.rISN + 1, flags: flagACK | flagPSH, payload: data})
			if len(got.payload) != len(data) {
				t.Errorf("%s: segment to %s carries %d bytes, want %d without a header", when, c.real, len(got.payload), len(data))
			}
			if want := c.isn + 1 + sent + HeaderLen; got.seq != want {
				t.Errorf("%s: segment to %s has seq %d, want %d", when, c.real, got.seq, want)
			}
			back := c.reverse(segment{seq: c.rISN + 1, ack: c.isn + 1 + sent + uint32(len(data)) + HeaderLen, flags: flagACK})
			if want := c.isn + 1 + sent + uint32(len(data)); back.ack != want {
				t.Errorf("%s: ack from %s = %d, want %d", when, c.real, back.ack, want)
			}
		}
		sent += uint32(len(data))
	}

	exchange("before the change")
	publish(0, 1)
	exchange("with real1 down")
	publish(1, 1)
	exchange("with real1 back")
	publish(1, 0)
	exchange("with real2 down")
}

func TestNoFlowPasses(t *testing.T) {
	tn := newTestNet(t)
	d := tn.load(t, Config{})
	setTestVIP(t, d, false)
	c := newConn(t, tn, d, 50010)

	for _, s := range []segment{
		c.fromClient(segment{seq: 5, ack: 9, flags: flagACK, payload: []byte("x")}),
		c.fromClient(segment{seq: 5, flags: flagRST}),
		{srcMAC: clientMAC, dstMAC: tn.l4ClientMAC, src: c.client, dst: netip.AddrPortFrom(vipAddr, 81), seq: 5, flags: flagSYN},
	} {
		in := s.marshal()
		ret, out := tn.run(t, d, tn.clientIdx, in)
		if ret != xdpPass {
			t.Errorf("%s -> %s flags %#x: verdict %d, want XDP_PASS", s.src, s.dst, s.flags, ret)
		}
		if !bytes.Equal(out, in) {
			t.Errorf("%s -> %s flags %#x: passed frame was modified", s.src, s.dst, s.flags)
		}
	}
	stats, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if stats["pass/no_flow"] != 3 {
		t.Errorf("pass/no_flow = %d, want 3", stats["pass/no_flow"])
	}
}

func TestPassReasons(t *testing.T) {
	tn := newTestNet(t)
	c := &conn{t: t, tn: tn, client: netip.AddrPortFrom(clientAddr, 50011), isn: 77}
	syn := func(s segment) []byte {
		s = c.fromClient(s)
		s.seq, s.flags = 77, flagSYN
		return s.marshal()
	}
	ipv6 := syn(segment{})
	binary.BigEndian.PutUint16(ipv6[12:], 0x86dd)

	tests := []struct {
		name   string
		frame  []byte
		reason string
		setup  func(t *testing.T, d *Dataplane)
	}{
		{name: "SYN with data", frame: syn(segment{payload: []byte("GET /")}), reason: "pass/syn_data"},
		{name: "Fast Open option", frame: syn(segment{options: []byte{34, 2}}), reason: "pass/fast_open"},
		{name: "Fast Open after NOPs", frame: syn(segment{options: append(optMSS(1460), 1, 1, 34, 10, 1, 2, 3, 4, 5, 6, 7, 8)}), reason: "pass/fast_open"},
		{name: "experimental Fast Open", frame: syn(segment{options: []byte{254, 4, 0xf9, 0x89}}), reason: "pass/fast_open"},
		{name: "IP options", frame: syn(segment{ipOptions: []byte{1, 1, 1, 0}}), reason: "pass/ip_options"},
		{name: "fragment", frame: syn(segment{fragOff: 0x2000}), reason: "pass/fragment"},
		{name: "IPv6", frame: ipv6, reason: "pass/not_ipv4"},
		{name: "UDP", frame: syn(segment{proto: 17}), reason: "pass/not_tcp"},
		{name: "bad data offset", frame: syn(segment{tcpLen: 16}), reason: "pass/bad_tcp"},
		{name: "new flows off", frame: syn(segment{}), reason: "pass/new_flows_off", setup: func(t *testing.T, d *Dataplane) {
			if err := d.SetNewFlows(false); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "no real", frame: syn(segment{}), reason: "pass/no_real", setup: func(t *testing.T, d *Dataplane) {
			meta := lbVipMeta{Id: 0, RingSize: 0}
			if err := d.objs.Vips.Update(vipKey(vip), &meta, ebpf.UpdateAny); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "no port", frame: syn(segment{}), reason: "pass/no_port", setup: func(t *testing.T, d *Dataplane) {
			var p uint16
			for d.objs.FreePorts.LookupAndDelete(nil, &p) == nil {
			}
		}},
		{name: "table full", frame: syn(segment{}), reason: "pass/table_full", setup: func(t *testing.T, d *Dataplane) {
			// Fill the flow table, sized for 2 connections.
			for p := uint16(1); p <= 4; p++ {
				k := lbFlowKey{Saddr: 1, Sport: p}
				if err := d.objs.Flows.Update(&k, &lbFlow{Dir: uint8(lbFlowDirFLOW_REVERSE)}, ebpf.UpdateNoExist); err != nil {
					t.Fatal(err)
				}
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := tn.load(t, Config{FlowTableSize: 2})
			setTestVIP(t, d, false)
			if tc.setup != nil {
				tc.setup(t, d)
			}
			ret, out := tn.run(t, d, tn.clientIdx, tc.frame)
			if ret != xdpPass {
				t.Errorf("verdict %d, want XDP_PASS", ret)
			}
			if !bytes.Equal(out, tc.frame) {
				t.Errorf("passed frame was modified")
			}
			stats, err := d.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if stats[tc.reason] != 1 {
				t.Errorf("%s = %d, want 1 (counters: %v)", tc.reason, stats[tc.reason], nonZero(stats))
			}
			if stats["new_flows"] != 0 {
				t.Errorf("new_flows = %d, want 0", stats["new_flows"])
			}
			var free uint16
			if tc.reason != "pass/no_port" {
				// The port popped for a failed insert must be back.
				n := 0
				for d.objs.FreePorts.LookupAndDelete(nil, &free) == nil {
					n++
				}
				if n != 64 {
					t.Errorf("%d free ports after the pass, want all 64", n)
				}
			}
		})
	}
}

func nonZero(m map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

func TestSweepReturnsPorts(t *testing.T) {
	tn := newTestNet(t)
	d := tn.load(t, Config{PortMin: 40000, PortMax: 40001, ClosingTimeout: 1, IdleTimeout: 1})
	setTestVIP(t, d, false)

	for p := uint16(50100); p < 50102; p++ {
		newConn(t, tn, d, p).open()
	}
	c := newConn(t, tn, d, 50102)
	ret, _ := tn.run(t, d, tn.clientIdx, c.fromClient(segment{seq: c.isn, flags: flagSYN}).marshal())
	if ret != xdpPass {
		t.Fatalf("SYN with both ports taken: verdict %d, want XDP_PASS", ret)
	}

	res, err := d.Sweep()
	if err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if res.Expired != 2 || res.Flows != 0 {
		t.Errorf("Sweep = %+v, want 2 expired and 0 left", res)
	}
	var k lbFlowKey
	var f lbFlow
	if d.objs.Flows.Iterate().Next(&k, &f) {
		t.Errorf("flow table not empty after the sweep: %+v", k)
	}
	for p := uint16(50200); p < 50202; p++ {
		newConn(t, tn, d, p).open()
	}
}

func TestSweepKeepsLiveFlows(t *testing.T) {
	tn := newTestNet(t)
	d := tn.load(t, Config{})
	setTestVIP(t, d, false)
	c := newConn(t, tn, d, 50300)
	c.open()

	res, err := d.Sweep()
	if err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if res.Expired != 0 || res.Flows != 1 {
		t.Errorf("Sweep = %+v, want the fresh flow kept", res)
	}
}
