package topology

import (
	"net/netip"
	"strings"
	"testing"
)

func TestPlanAddresses(t *testing.T) {
	hosts := plan(Spec{Clients: 2, L4Nodes: 2, L7Nodes: 3, Backends: 2})
	want := map[string][]string{
		"client-0":  {"10.99.1.101/24"},
		"client-1":  {"10.99.1.102/24"},
		"l4-0":      {"10.99.1.1/24", "10.99.2.1/24"},
		"l4-1":      {"10.99.1.2/24", "10.99.2.2/24"},
		"l7-0":      {"10.99.2.11/24", "10.99.3.11/24"},
		"l7-2":      {"10.99.2.13/24", "10.99.3.13/24"},
		"backend-1": {"10.99.3.102/24"},
	}
	if len(hosts) != 9 {
		t.Fatalf("plan() returned %d hosts, want 9", len(hosts))
	}
	for _, h := range hosts {
		w, ok := want[h.name]
		if !ok {
			continue
		}
		var got []string
		for _, ifc := range h.ifaces {
			got = append(got, ifc.addr.String())
		}
		if strings.Join(got, " ") != strings.Join(w, " ") {
			t.Errorf("host %s addresses = %v, want %v", h.name, got, w)
		}
	}
}

func TestPlanAddressesUnique(t *testing.T) {
	spec := Spec{Clients: maxClients, L4Nodes: maxL4Nodes, L7Nodes: maxL7Nodes, Backends: maxBackends}
	if err := spec.validate(); err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]string{}
	for _, h := range plan(spec) {
		for _, ifc := range h.ifaces {
			a := ifc.addr.Addr()
			if other, dup := seen[a]; dup {
				t.Errorf("address %s given to %s and %s", a, other, h.name)
			}
			seen[a] = h.name
			if !segmentPrefixes[ifc.segment].Contains(a) {
				t.Errorf("address %s of %s is outside segment %s", a, h.name, ifc.segment)
			}
			if a == VIP {
				t.Errorf("host %s got the VIP %s as an interface address", h.name, a)
			}
		}
	}
}

func TestSpecValidate(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		ok   bool
	}{
		{"defaults", Spec{}.withDefaults(), true},
		{"one L7 node", Spec{Clients: 1, L4Nodes: 1, L7Nodes: 1, Backends: 1}, false},
		{"too many L4 nodes", Spec{Clients: 1, L4Nodes: maxL4Nodes + 1, L7Nodes: 2, Backends: 1}, false},
		{"too many clients", Spec{Clients: maxClients + 1, L4Nodes: 1, L7Nodes: 2, Backends: 1}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.spec.validate()
			if (err == nil) != tc.ok {
				t.Errorf("validate(%+v) = %v, want ok=%v", tc.spec, err, tc.ok)
			}
		})
	}
}

func TestRunPrefix(t *testing.T) {
	tests := []struct{ name, want string }{
		{"tge-4242-3-l4-0", "tge-4242-"},
		{"tge-17-1-sw", "tge-17-"},
	}
	for _, tc := range tests {
		if got := runPrefix(tc.name); got != tc.want {
			t.Errorf("runPrefix(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}
