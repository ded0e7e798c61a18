package topology

import (
	"fmt"
	"net/netip"
)

// Role is the job of a host in the topology.
type Role string

// Host roles.
const (
	RoleClient  Role = "client"
	RoleL4      Role = "l4"
	RoleL7      Role = "l7"
	RoleBackend Role = "backend"
)

// Segment is one Ethernet segment of the topology, a bridge that hosts join.
type Segment string

// Segments, from the clients inward.
const (
	SegmentFront Segment = "front" // clients and L4 nodes
	SegmentMid   Segment = "mid"   // L4 nodes and L7 nodes
	SegmentBack  Segment = "back"  // L7 nodes and backends
)

// Addressing of every topology. The prefixes exist only inside the
// namespaces that [New] creates.
var (
	// VIP is the virtual address that every L4 node carries on its loopback
	// device and that clients route through the L4 nodes.
	VIP = netip.MustParseAddr("10.99.10.1")

	segmentPrefixes = map[Segment]netip.Prefix{
		SegmentFront: netip.MustParsePrefix("10.99.1.0/24"),
		SegmentMid:   netip.MustParsePrefix("10.99.2.0/24"),
		SegmentBack:  netip.MustParsePrefix("10.99.3.0/24"),
	}
)

// Spec sets how many hosts of each role a topology has. A zero count selects
// the default: one client, one L4 node, two L7 nodes and two backends.
type Spec struct {
	Clients  int
	L4Nodes  int
	L7Nodes  int
	Backends int
}

// Maximum host counts per role, so that host numbers stay inside the
// address blocks that [plan] gives each role.
const (
	maxClients  = 100
	maxL4Nodes  = 9
	maxL7Nodes  = 50
	maxBackends = 100
)

func (s Spec) withDefaults() Spec {
	if s.Clients == 0 {
		s.Clients = 1
	}
	if s.L4Nodes == 0 {
		s.L4Nodes = 1
	}
	if s.L7Nodes == 0 {
		s.L7Nodes = 2
	}
	if s.Backends == 0 {
		s.Backends = 2
	}
	return s
}

func (s Spec) validate() error {
	checks := []struct {
		name      string
		n, lo, hi int
	}{
		{"Clients", s.Clients, 1, maxClients},
		{"L4Nodes", s.L4Nodes, 1, maxL4Nodes},
		{"L7Nodes", s.L7Nodes, 2, maxL7Nodes},
		{"Backends", s.Backends, 1, maxBackends},
	}
	for _, c := range checks {
		if c.n < c.lo || c.n > c.hi {
			return fmt.Errorf("topology: Spec.%s is %d, want %d..%d", c.name, c.n, c.lo, c.hi)
		}
	}
	return nil
}

// hostPlan is the addressing of one host, computed before anything is
// created.
type hostPlan struct {
	name   string // role and index, such as "l7-1"
	role   Role
	index  int
	ifaces []ifacePlan
}

// ifacePlan is one veth end inside a host and the segment it joins.
type ifacePlan struct {
	name    string // device name inside the host namespace
	segment Segment
	addr    netip.Prefix
}

// hostOctet returns the last octet of a host's address on a segment. Each
// role has its own block so that addresses read at a glance: L4 nodes .1-.9,
// L7 nodes .11-.60, clients and backends .101-.200.
func hostOctet(role Role, index int) byte {
	switch role {
	case RoleL4:
		return byte(1 + index)
	case RoleL7:
		return byte(11 + index)
	default:
		return byte(101 + index)
	}
}

func segmentAddr(seg Segment, role Role, index int) netip.Prefix {
	p := segmentPrefixes[seg]
	b := p.Addr().As4()
	b[3] = hostOctet(role, index)
	return netip.PrefixFrom(netip.AddrFrom4(b), p.Bits())
}

// plan returns every host of s with its interfaces and addresses.
func plan(s Spec) []hostPlan {
	var hosts []hostPlan
	add := func(role Role, n int, segs ...Segment) {
		for i := range n {
			h := hostPlan{name: fmt.Sprintf("%s-%d", role, i), role: role, index: i}
			for j, seg := range segs {
				h.ifaces = append(h.ifaces, ifacePlan{
					name:    fmt.Sprintf("eth%d", j),
					segment: seg,
					addr:    segmentAddr(seg, role, i),
				})
			}
			hosts = append(hosts, h)
		}
	}
	add(RoleClient, s.Clients, SegmentFront)
	add(RoleL4, s.L4Nodes, SegmentFront, SegmentMid)
	add(RoleL7, s.L7Nodes, SegmentMid, SegmentBack)
	add(RoleBackend, s.Backends, SegmentBack)
	return hosts
}
