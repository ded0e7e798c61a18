//go:build !linux

package upstream

import "golang.org/x/sys/unix"

// pollEvents are the events that make an idle connection unusable. Without
// POLLRDHUP a close shows as POLLIN, since a read would return EOF.
const pollEvents = unix.POLLIN
