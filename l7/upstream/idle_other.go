//go:build !linux

package upstream

import "net"

// idleUsable reports true: outside Linux the fast path finds a closed idle
// connection when it uses it, and retries on a new one.
func idleUsable(*net.TCPConn) bool { return true }
