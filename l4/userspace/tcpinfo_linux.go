//go:build linux

package userspace

import (
	"net"

	"golang.org/x/sys/unix"
)

// tcpProgress returns the bytes received from the peer plus the bytes the
// peer acknowledged, from TCP_INFO. It grows whenever data moves in either
// direction, including within one long spliced copy, and returns 0 once the
// socket is closed.
func tcpProgress(c *net.TCPConn) uint64 {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	var p uint64
	_ = raw.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err == nil {
			p = info.Bytes_received + info.Bytes_acked
		}
	})
	return p
}
