package l7

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	proxyproto "github.com/pires/go-proxyproto"
)

// maxUniqueIDLength is the longest PP2_TYPE_UNIQUE_ID value the PROXY
// protocol specification (version 2, section 2.2.5) allows.
const maxUniqueIDLength = 128

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// validateProxyHeader rejects a PROXY v2 header whose TLVs are malformed,
// whose PP2_TYPE_CRC32C checksum does not match, or whose unique ID is too
// long. go-proxyproto v0.15.0 parses TLVs only on request and checks none
// of this, so without it a corrupted header would be served.
func validateProxyHeader(h *proxyproto.Header) error {
	if h.Version != 2 {
		return nil
	}
	tlvs, err := h.TLVs()
	if err != nil {
		return fmt.Errorf("proxy header: invalid tlvs: %w", err)
	}
	for _, t := range tlvs {
		switch t.Type {
		case proxyproto.PP2_TYPE_UNIQUE_ID:
			if len(t.Value) > maxUniqueIDLength {
				return fmt.Errorf("proxy header: unique id of %d bytes, max %d", len(t.Value), maxUniqueIDLength)
			}
		case proxyproto.PP2_TYPE_CRC32C:
			if err := checkCRC32C(h, t.Value); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkCRC32C compares want with the CRC32C of the whole header computed
// with the checksum field set to zero. The header is serialised again from
// its parsed fields, which reproduces the received bytes for TCP and UDP
// over IPv4 and IPv6.
func checkCRC32C(h *proxyproto.Header, want []byte) error {
	if len(want) != 4 {
		return fmt.Errorf("proxy header: crc32c value of %d bytes, want 4", len(want))
	}
	raw, err := h.Format()
	if err != nil {
		return fmt.Errorf("proxy header: serialise for crc32c: %w", err)
	}
	// Walk the TLVs after the fixed part and the addresses to zero the
	// checksum value inside raw.
	off, err := tlvOffset(raw)
	if err != nil {
		return err
	}
	for off+3 <= len(raw) {
		typ := proxyproto.PP2Type(raw[off])
		n := int(binary.BigEndian.Uint16(raw[off+1 : off+3]))
		if off+3+n > len(raw) {
			return errors.New("proxy header: truncated tlv")
		}
		if typ == proxyproto.PP2_TYPE_CRC32C {
			clear(raw[off+3 : off+3+n])
		}
		off += 3 + n
	}
	got := crc32.Checksum(raw, castagnoli)
	if got != binary.BigEndian.Uint32(want) {
		return fmt.Errorf("proxy header: crc32c mismatch: header carries %08x, computed %08x", binary.BigEndian.Uint32(want), got)
	}
	return nil
}

// tlvOffset returns where the TLVs start in a serialised v2 header: after
// the 16-byte fixed part and the address block of the family in byte 13.
func tlvOffset(raw []byte) (int, error) {
	const fixed = 16
	if len(raw) < fixed {
		return 0, errors.New("proxy header: shorter than 16 bytes")
	}
	var addrLen int
	switch raw[13] >> 4 {
	case 0x0:
		addrLen = 0
	case 0x1:
		addrLen = 12
	case 0x2:
		addrLen = 36
	case 0x3:
		addrLen = 216
	default:
		return 0, fmt.Errorf("proxy header: unknown address family %#x", raw[13]>>4)
	}
	if fixed+addrLen > len(raw) {
		return 0, errors.New("proxy header: address block beyond header")
	}
	return fixed + addrLen, nil
}
