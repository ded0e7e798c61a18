package cache

import (
	"strconv"
	"strings"
)

// cacheStatus is one member of the Cache-Status field (RFC 9211).
type cacheStatus struct {
	hit       bool
	fwd       string // "uri-miss", "vary-miss", "miss", "request", "stale", "method", "bypass"
	fwdStatus int    // status of the forwarded response, 0 when not forwarded
	stored    bool
	collapsed bool
	hasTTL    bool
	ttl       int64 // remaining freshness in seconds, negative when stale
	detail    string
}

// format renders the member with name as the cache identifier.
func (s cacheStatus) format(name string) string {
	var b strings.Builder
	b.Grow(len(name) + len(s.fwd) + len(s.detail) + 48)
	b.WriteString(name)
	if s.hit {
		b.WriteString("; hit")
	}
	if s.fwd != "" {
		b.WriteString("; fwd=")
		b.WriteString(s.fwd)
	}
	if s.fwdStatus != 0 {
		b.WriteString("; fwd-status=")
		b.WriteString(strconv.Itoa(s.fwdStatus))
	}
	if s.stored {
		b.WriteString("; stored")
	}
	if s.collapsed {
		b.WriteString("; collapsed")
	}
	if s.hasTTL {
		b.WriteString("; ttl=")
		var digits [20]byte
		b.Write(strconv.AppendInt(digits[:0], s.ttl, 10))
	}
	if s.detail != "" {
		b.WriteString("; detail=")
		b.WriteString(s.detail)
	}
	return b.String()
}
