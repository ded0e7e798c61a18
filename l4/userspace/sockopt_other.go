//go:build !linux

package userspace

import (
	"net"
	"time"
)

// setUserTimeout does nothing outside Linux. A copy blocked writing to a
// peer that stopped reading ends only when the other direction goes idle.
func setUserTimeout(*net.TCPConn, time.Duration) error { return nil }
