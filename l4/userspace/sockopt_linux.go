//go:build linux

package userspace

import (
	"math"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// setUserTimeout sets TCP_USER_TIMEOUT on c. The kernel then resets the
// connection when sent data stays unacknowledged, or stays unsent because
// the peer keeps a zero receive window, for longer than d. That ends a copy
// blocked writing to a peer that stopped reading, which a read deadline
// cannot see.
func setUserTimeout(c *net.TCPConn, d time.Duration) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	ms := int(min(d.Milliseconds(), math.MaxInt32))
	var serr error
	err = raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, ms)
	})
	if err != nil {
		return err
	}
	return serr
}

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
