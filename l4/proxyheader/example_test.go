package proxyheader_test

import (
	"encoding/hex"
	"fmt"
	"net/netip"

	"github.com/tidegate/tidegate/l4/proxyheader"
)

func ExampleBuild() {
	client := netip.MustParseAddrPort("198.51.100.7:40000")
	vip := netip.MustParseAddrPort("192.0.2.1:443")
	id := proxyheader.ID{0: 0x01, 15: 0x2a}

	hdr, err := proxyheader.Build(2, client, vip, id)
	if err != nil {
		panic(err)
	}
	fmt.Println(len(hdr), "bytes")
	fmt.Println("signature ", hex.EncodeToString(hdr[:12]))
	fmt.Println("ver, fam  ", hex.EncodeToString(hdr[12:14]))
	fmt.Println("length    ", hex.EncodeToString(hdr[14:16]))
	fmt.Println("addresses ", hex.EncodeToString(hdr[16:28]))
	fmt.Println("tlv       ", hex.EncodeToString(hdr[28:31]))
	fmt.Println("unique id ", hex.EncodeToString(hdr[31:]))
	// Output:
	// 47 bytes
	// signature  0d0a0d0a000d0a515549540a
	// ver, fam   2111
	// length     001f
	// addresses  c6336407c00002019c4001bb
	// tlv        050010
	// unique id  0100000000000000000000000000002a
}
