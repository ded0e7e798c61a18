//go:build linux

package upstream

import (
	"errors"
	"net"
	"syscall"
)

// idleUsable reports whether an idle connection has nothing to read and
// is still open. It peeks without waiting: EAGAIN means open and quiet,
// zero bytes a close, and data an unsolicited response, after which the
// connection is out of step.
func idleUsable(c *net.TCPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var buf [1]byte
	var peekErr error
	err = rc.Read(func(fd uintptr) bool {
		_, _, peekErr = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	})
	return err == nil && errors.Is(peekErr, syscall.EAGAIN)
}
