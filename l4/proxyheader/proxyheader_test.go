package proxyheader

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"testing"

	proxyproto "github.com/pires/go-proxyproto"
)

func testID() ID {
	var id ID
	for i := range id {
		id[i] = byte(0xa0 + i)
	}
	return id
}

// TestBuildV2Layout checks the exact bytes against the layout in the package
// documentation, which the XDP engine relies on.
func TestBuildV2Layout(t *testing.T) {
	id := testID()
	got, err := Build(2, netip.MustParseAddrPort("198.51.100.7:40000"), netip.MustParseAddrPort("192.0.2.1:443"), id)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("\r\n\r\n\x00\r\nQUIT\n")
	want = append(want, 0x21, 0x11, 0x00, 31)
	want = append(want, 198, 51, 100, 7, 192, 0, 2, 1)
	want = append(want, 0x9c, 0x40, 0x01, 0xbb)
	want = append(want, 0x05, 0x00, 16)
	want = append(want, id[:]...)
	if !bytes.Equal(got, want) {
		t.Fatalf("Build(2, ipv4) =\n%s\nwant\n%s", hex.Dump(got), hex.Dump(want))
	}
	if len(got) != 47 {
		t.Errorf("len = %d, want 47", len(got))
	}
}

func TestBuildRoundTrip(t *testing.T) {
	tests := []struct {
		name      string
		version   int
		client    string
		vip       string
		wantProto proxyproto.AddressFamilyAndProtocol
		wantLen   int
	}{
		{"v2 ipv4", 2, "198.51.100.7:40000", "192.0.2.1:443", proxyproto.TCPv4, 47},
		{"v2 ipv6", 2, "[2001:db8::7]:40000", "[2001:db8::1]:443", proxyproto.TCPv6, 71},
		{"v2 mapped ipv4", 2, "[::ffff:198.51.100.7]:1", "[::ffff:192.0.2.1]:2", proxyproto.TCPv4, 47},
		{"v2 mixed families", 2, "198.51.100.7:1", "[2001:db8::1]:2", proxyproto.TCPv6, 71},
		{"v1 ipv4", 1, "198.51.100.7:40000", "192.0.2.1:443", proxyproto.TCPv4, 0},
		{"v1 ipv6", 1, "[2001:db8::7]:40000", "[2001:db8::1]:443", proxyproto.TCPv6, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client := netip.MustParseAddrPort(tc.client)
			vip := netip.MustParseAddrPort(tc.vip)
			id := testID()
			b, err := Build(tc.version, client, vip, id)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			if tc.wantLen != 0 && len(b) != tc.wantLen {
				t.Errorf("len = %d, want %d", len(b), tc.wantLen)
			}
			h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(b)))
			if err != nil {
				t.Fatalf("parse built header: %v", err)
			}
			if h.TransportProtocol != tc.wantProto {
				t.Errorf("transport = %v, want %v", h.TransportProtocol, tc.wantProto)
			}
			src, dst, ok := h.TCPAddrs()
			if !ok {
				t.Fatal("parsed header has no TCP addresses")
			}
			if got := src.AddrPort(); got.Addr().Unmap() != client.Addr().Unmap() || got.Port() != client.Port() {
				t.Errorf("source = %s, want %s", got, client)
			}
			if got := dst.AddrPort(); got.Addr().Unmap() != vip.Addr().Unmap() || got.Port() != vip.Port() {
				t.Errorf("destination = %s, want %s", got, vip)
			}
			gotID, ok := UniqueID(h)
			if tc.version == 2 && (!ok || gotID != id) {
				t.Errorf("UniqueID = %s, %v; want %s, true", gotID, ok, id)
			}
			if tc.version == 1 && ok {
				t.Errorf("v1 header carries a unique ID %s", gotID)
			}
		})
	}
}

func TestBuildRejects(t *testing.T) {
	c := netip.MustParseAddrPort("198.51.100.7:1")
	v := netip.MustParseAddrPort("192.0.2.1:2")
	if _, err := Build(3, c, v, ID{}); !errors.Is(err, ErrVersion) {
		t.Errorf("Build(3) error = %v, want ErrVersion", err)
	}
	if _, err := Build(2, netip.AddrPort{}, v, ID{}); err == nil {
		t.Error("Build with a zero client address succeeded")
	}
}

func TestIDSourceUnique(t *testing.T) {
	a, b := NewIDSource(), NewIDSource()
	seen := map[ID]bool{}
	for range 1000 {
		for _, s := range []*IDSource{a, b} {
			id := s.Next()
			if seen[id] {
				t.Fatalf("ID %s handed out twice", id)
			}
			seen[id] = true
		}
	}
	if id := a.Next(); len(id.String()) != 32 {
		t.Errorf("String() = %q, want 32 hex digits", id.String())
	}
}

// FuzzBuild checks that every header Build returns parses back to the same
// addresses and ID.
func FuzzBuild(f *testing.F) {
	f.Add(2, []byte{198, 51, 100, 7}, uint16(40000), []byte{192, 0, 2, 1}, uint16(443), []byte("0123456789abcdef"))
	f.Add(1, []byte{198, 51, 100, 7}, uint16(0), []byte{32, 1, 13, 184, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, uint16(65535), []byte{})
	f.Add(2, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 1, 2, 3, 4}, uint16(1), []byte{5, 6, 7, 8}, uint16(2), []byte{1})
	f.Fuzz(func(t *testing.T, version int, src []byte, sport uint16, dst []byte, dport uint16, idBytes []byte) {
		sa, ok1 := netip.AddrFromSlice(src)
		da, ok2 := netip.AddrFromSlice(dst)
		if !ok1 || !ok2 {
			return
		}
		var id ID
		copy(id[:], idBytes)
		client, vip := netip.AddrPortFrom(sa, sport), netip.AddrPortFrom(da, dport)
		b, err := Build(version, client, vip, id)
		if version != 1 && version != 2 {
			if err == nil {
				t.Fatalf("Build(%d) succeeded", version)
			}
			return
		}
		if err != nil {
			t.Fatalf("Build(%d, %s, %s): %v", version, client, vip, err)
		}
		h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			t.Fatalf("parse %x: %v", b, err)
		}
		s, d, ok := h.TCPAddrs()
		if !ok || s.AddrPort().Addr().Unmap() != sa.Unmap() || d.AddrPort().Addr().Unmap() != da.Unmap() ||
			s.AddrPort().Port() != sport || d.AddrPort().Port() != dport {
			t.Fatalf("round trip %s -> %s gave %v -> %v", client, vip, s, d)
		}
		if got, ok := UniqueID(h); version == 2 && (!ok || got != id) {
			t.Fatalf("UniqueID = %s, %v; want %s", got, ok, id)
		}
	})
}

func BenchmarkBuildV2(b *testing.B) {
	c := netip.MustParseAddrPort("198.51.100.7:40000")
	v := netip.MustParseAddrPort("192.0.2.1:443")
	ids := NewIDSource()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Build(2, c, v, ids.Next()); err != nil {
			b.Fatal(err)
		}
	}
}
