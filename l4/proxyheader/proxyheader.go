// Package proxyheader builds the PROXY protocol header the L4 tier writes at
// the start of every connection to a real. Both L4 engines use it: the
// userspace engine writes the bytes itself, and the XDP engine inserts the
// same bytes into the TCP stream, so the L7 receives one format whichever
// engine carried the connection.
//
// # Version 2 layout
//
// A version 2 header (the default) is the binary form from the HAProxy
// PROXY protocol specification, built with github.com/pires/go-proxyproto:
//
//	offset  size  field
//	0       12    signature \r\n\r\n\0\r\nQUIT\n
//	12      1     0x21 (version 2, command PROXY)
//	13      1     0x11 (TCP over IPv4) or 0x21 (TCP over IPv6)
//	14      2     length of what follows, big endian (31 for IPv4, 55 for IPv6)
//	16      4/16  client (source) address
//	..      4/16  VIP (destination) address
//	..      2     client port, big endian
//	..      2     VIP port, big endian
//	..      1     TLV type 0x05 (PP2_TYPE_UNIQUE_ID)
//	..      2     TLV value length, big endian: 16
//	..      16    connection ID, see [ID]
//
// So the header is 47 bytes for IPv4 and 71 bytes for IPv6. When the client
// and the VIP are of different families, both are written as IPv6 (an IPv4
// address becomes ::ffff:a.b.c.d).
//
// A version 1 header is the text line "PROXY TCP4 client vip cport vport\r\n".
// Version 1 has no TLVs, so the connection ID is only logged at the L4.
package proxyheader

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"

	proxyproto "github.com/pires/go-proxyproto"
)

// IDLen is the length of a connection ID in bytes.
const IDLen = 16

// ID identifies one client connection across both tiers. Bytes 0..7 are the
// ID of the L4 process that accepted the connection (random at start), bytes
// 8..15 a big-endian counter of the connections it accepted. The L7 logs the
// ID it receives in the UNIQUE_ID TLV, and the L4 logs the same value, so a
// connection can be followed from one log into the other.
type ID [IDLen]byte

// String returns the ID as 32 lower-case hex digits, the form both tiers log.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// IDSource hands out connection IDs. It is safe for concurrent use.
type IDSource struct {
	instance [8]byte
	next     atomic.Uint64
}

// NewIDSource returns a source with a random instance prefix, so two L4
// processes (or two runs of one) do not hand out the same IDs.
func NewIDSource() *IDSource {
	s := &IDSource{}
	_, _ = rand.Read(s.instance[:]) // crypto/rand.Read documents that it never returns an error
	return s
}

// Next returns a new ID.
func (s *IDSource) Next() ID {
	var id ID
	copy(id[:8], s.instance[:])
	binary.BigEndian.PutUint64(id[8:], s.next.Add(1))
	return id
}

// ErrVersion is returned by [Build] for a version other than 1 or 2.
var ErrVersion = errors.New("proxyheader: version must be 1 or 2")

// Build returns the PROXY header for a connection from client to vip. The ID
// is carried in a PP2_TYPE_UNIQUE_ID TLV in version 2 and left out in
// version 1, which has no TLVs.
func Build(version int, client, vip netip.AddrPort, id ID) ([]byte, error) {
	if version != 1 && version != 2 {
		return nil, fmt.Errorf("%w (got %d)", ErrVersion, version)
	}
	if !client.IsValid() || !vip.IsValid() {
		return nil, fmt.Errorf("proxyheader: invalid address %s -> %s", client, vip)
	}

	// Dual-stack listeners report IPv4 peers as ::ffff:a.b.c.d. Unmapping
	// writes them as TCP over IPv4 when both ends are IPv4.
	src := net.TCPAddrFromAddrPort(netip.AddrPortFrom(client.Addr().Unmap(), client.Port()))
	dst := net.TCPAddrFromAddrPort(netip.AddrPortFrom(vip.Addr().Unmap(), vip.Port()))
	h := proxyproto.HeaderProxyFromAddrs(byte(version), src, dst)
	if version == 2 {
		err := h.SetTLVs([]proxyproto.TLV{{Type: proxyproto.PP2_TYPE_UNIQUE_ID, Value: id[:]}})
		if err != nil {
			return nil, fmt.Errorf("proxyheader: set unique id tlv: %w", err)
		}
	}
	b, err := h.Format()
	if err != nil {
		return nil, fmt.Errorf("proxyheader: format v%d header: %w", version, err)
	}
	return b, nil
}

// UniqueID returns the connection ID from a parsed version 2 header, and
// false when the header has no valid UNIQUE_ID TLV.
func UniqueID(h *proxyproto.Header) (ID, bool) {
	tlvs, err := h.TLVs()
	if err != nil {
		return ID{}, false
	}
	for _, t := range tlvs {
		if t.Type == proxyproto.PP2_TYPE_UNIQUE_ID && len(t.Value) == IDLen {
			return ID(t.Value), true
		}
	}
	return ID{}, false
}
