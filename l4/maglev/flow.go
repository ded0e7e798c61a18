package maglev

import (
	"encoding/binary"
	"net/netip"
)

// HashFlow hashes a TCP connection's addresses and ports. The protocol is
// always TCP, so the 4-tuple is the 5-tuple.
func HashFlow(src, dst netip.AddrPort) uint64 {
	h := hashAddr(0x9e3779b97f4a7c15, src.Addr())
	h = Mix64(h ^ uint64(src.Port())<<16 ^ uint64(dst.Port()))
	return Mix64(h ^ hashAddr(h, dst.Addr()))
}

// HashClient hashes the client address alone, for client affinity.
func HashClient(src netip.Addr) uint64 {
	return Mix64(hashAddr(0x9e3779b97f4a7c15, src))
}

func hashAddr(seed uint64, a netip.Addr) uint64 {
	b := a.Unmap().As16()
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	return Mix64(seed^hi) ^ Mix64(lo+seed)
}
