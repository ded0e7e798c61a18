package topology

import (
	"net/netip"
	"testing"

	"github.com/tidegate/tidegate/shared/config"
)

// FuzzMarshalConfigPatch checks that no patch path or fragment panics and
// that whatever MarshalConfig accepts parses as a configuration.
func FuzzMarshalConfigPatch(f *testing.F) {
	f.Add("l7.routes[0]", "match: {path_prefix: /api}")
	f.Add("l7", "access_log: {path: off}")
	f.Add("", "drain_timeout: 5s")
	f.Add("l7.routes[", "name: x")
	f.Add("l7.routes[-1]", "name: x")
	f.Add("l7..routes", "name: x")
	f.Add("l7.listeners[0].tls", "- a")
	f.Add("admin", "address: [unclosed")
	f.Add("l7.upstreams[0].backends[0]", "weight: 5")
	base := L7File(nil, []netip.Addr{netip.MustParseAddr("10.99.3.101")})
	f.Fuzz(func(t *testing.T, path, fragment string) {
		data, err := MarshalConfig(base, Patch{Path: path, YAML: fragment})
		if err != nil {
			return
		}
		if _, err := config.Parse(data); err != nil {
			t.Errorf("MarshalConfig accepted a patch whose output does not parse: %v\n%s", err, data)
		}
	})
}
