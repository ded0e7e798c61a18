//go:build linux

package upstream

import "golang.org/x/sys/unix"

// pollEvents are the events that make an idle connection unusable: data,
// or the peer's half of a close.
const pollEvents = unix.POLLIN | unix.POLLRDHUP
