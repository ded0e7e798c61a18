//go:build linux

package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// TCP flag bits as in the TCP header's flags byte.
const (
	flagFIN = 0x01
	flagSYN = 0x02
	flagRST = 0x04
	flagPSH = 0x08
	flagACK = 0x10
)

// segment is a test frame: Ethernet, IPv4 without options unless ipOptions
// is set, and TCP.
type segment struct {
	srcMAC, dstMAC net.HardwareAddr
	src, dst       netip.AddrPort
	seq, ack       uint32
	flags          uint8
	window         uint16
	options        []byte // TCP options, padded to 4 bytes by marshal
	payload        []byte
	ipOptions      []byte
	fragOff        uint16 // raw IPv4 flags and fragment offset field
	proto          uint8  // 0 means TCP
	tcpLen         uint8  // data offset override in bytes, 0 means computed
}

func (s segment) marshal() []byte {
	opts := append([]byte(nil), s.options...)
	for len(opts)%4 != 0 {
		opts = append(opts, 0)
	}
	ipLen := 20 + len(s.ipOptions)
	tcpLen := 20 + len(opts)
	b := make([]byte, 14+ipLen+tcpLen+len(s.payload))

	copy(b[0:6], s.dstMAC)
	copy(b[6:12], s.srcMAC)
	binary.BigEndian.PutUint16(b[12:], 0x0800)

	ip := b[14 : 14+ipLen]
	ip[0] = 0x40 | byte(ipLen/4)
	binary.BigEndian.PutUint16(ip[2:], uint16(ipLen+tcpLen+len(s.payload)))
	binary.BigEndian.PutUint16(ip[4:], 0x1234)
	binary.BigEndian.PutUint16(ip[6:], s.fragOff)
	ip[8] = 64
	ip[9] = 6
	if s.proto != 0 {
		ip[9] = s.proto
	}
	src, dst := s.src.Addr().As4(), s.dst.Addr().As4()
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	copy(ip[20:], s.ipOptions)
	binary.BigEndian.PutUint16(ip[10:], ^checksum(0, ip))

	tcp := b[14+ipLen:]
	binary.BigEndian.PutUint16(tcp[0:], s.src.Port())
	binary.BigEndian.PutUint16(tcp[2:], s.dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], s.seq)
	binary.BigEndian.PutUint32(tcp[8:], s.ack)
	doff := tcpLen
	if s.tcpLen != 0 {
		doff = int(s.tcpLen)
	}
	tcp[12] = byte(doff/4) << 4
	tcp[13] = s.flags
	w := s.window
	if w == 0 {
		w = 65535
	}
	binary.BigEndian.PutUint16(tcp[14:], w)
	copy(tcp[20:], opts)
	copy(tcp[tcpLen:], s.payload)
	binary.BigEndian.PutUint16(tcp[16:], ^tcpChecksum(src, dst, tcp))
	return b
}

// checksum is the reference Internet checksum (RFC 1071): the one's
// complement sum of 16-bit big-endian words, not yet complemented.
func checksum(sum uint32, b []byte) uint16 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

func tcpChecksum(src, dst [4]byte, tcp []byte) uint16 {
	pseudo := make([]byte, 12)
	copy(pseudo[0:4], src[:])
	copy(pseudo[4:8], dst[:])
	pseudo[9] = 6
	binary.BigEndian.PutUint16(pseudo[10:], uint16(len(tcp)))
	return checksum(uint32(checksum(0, pseudo)), tcp)
}

// parseSegment parses a frame produced by the program and verifies its IPv4
// and TCP checksums against the reference implementation.
func parseSegment(b []byte) (segment, error) {
	var s segment
	if len(b) < 14+20+20 {
		return s, fmt.Errorf("frame of %d bytes is too short", len(b))
	}
	s.dstMAC = net.HardwareAddr(b[0:6])
	s.srcMAC = net.HardwareAddr(b[6:12])
	if binary.BigEndian.Uint16(b[12:]) != 0x0800 {
		return s, errors.New("not IPv4")
	}

	ip := b[14:]
	ihl := int(ip[0]&0xf) * 4
	tot := int(binary.BigEndian.Uint16(ip[2:]))
	if tot > len(ip) || tot < ihl+20 {
		return s, fmt.Errorf("IPv4 total length %d does not fit the %d bytes after Ethernet", tot, len(ip))
	}
	if c := checksum(0, ip[:ihl]); c != 0xffff {
		return s, fmt.Errorf("IPv4 header checksum wrong (sum %#04x)", c)
	}

	var src, dst [4]byte
	copy(src[:], ip[12:16])
	copy(dst[:], ip[16:20])
	tcp := ip[ihl:tot]
	if c := tcpChecksum(src, dst, tcp); c != 0xffff {
		return s, fmt.Errorf("TCP checksum wrong (sum %#04x)", c)
	}

	doff := int(tcp[12]>>4) * 4
	s.src = netip.AddrPortFrom(netip.AddrFrom4(src), binary.BigEndian.Uint16(tcp[0:]))
	s.dst = netip.AddrPortFrom(netip.AddrFrom4(dst), binary.BigEndian.Uint16(tcp[2:]))
	s.seq = binary.BigEndian.Uint32(tcp[4:])
	s.ack = binary.BigEndian.Uint32(tcp[8:])
	s.flags = tcp[13]
	s.window = binary.BigEndian.Uint16(tcp[14:])
	s.options = append([]byte(nil), tcp[20:doff]...)
	s.payload = append([]byte(nil), tcp[doff:]...)
	return s, nil
}

// Option builders.

func optMSS(mss uint16) []byte { return []byte{2, 4, byte(mss >> 8), byte(mss)} }

func optSACK(edges ...uint32) []byte {
	b := []byte{5, byte(2 + 4*len(edges))}
	for _, e := range edges {
		b = binary.BigEndian.AppendUint32(b, e)
	}
	return b
}

// findOption returns the body of the first option of kind in opts.
func findOption(opts []byte, kind byte) []byte {
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0:
			return nil
		case 1:
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			return nil
		}
		if opts[i] == kind {
			return opts[i+2 : i+int(opts[i+1])]
		}
		i += int(opts[i+1])
	}
	return nil
}
