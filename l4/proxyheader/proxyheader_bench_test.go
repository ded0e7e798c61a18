package proxyheader

import (
	"bufio"
	"bytes"
	"net/netip"
	"testing"

	"github.com/pires/go-proxyproto"
)

// BenchmarkParseV2 reads a PROXY v2 header with its unique ID TLV the way
// the L7 listener does, through go-proxyproto, and extracts the ID.
func BenchmarkParseV2(b *testing.B) {
	c := netip.MustParseAddrPort("198.51.100.7:40000")
	v := netip.MustParseAddrPort("192.0.2.1:443")
	id := NewIDSource().Next()
	hdr, err := Build(2, c, v, id)
	if err != nil {
		b.Fatal(err)
	}
	src := bytes.NewReader(hdr)
	br := bufio.NewReader(src)
	b.ReportAllocs()
	b.SetBytes(int64(len(hdr)))
	for b.Loop() {
		src.Reset(hdr)
		br.Reset(src)
		h, err := proxyproto.Read(br)
		if err != nil {
			b.Fatal(err)
		}
		if got, ok := UniqueID(h); !ok || got != id {
			b.Fatalf("UniqueID = %s, %v; want %s", got, ok, id)
		}
	}
}
