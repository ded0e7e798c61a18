package topology

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/tidegate/tidegate/shared/config"
)

// Ports of the services that the generated configurations set up. Every host
// has its own namespace, so each role can use the same ports.
const (
	AdminPort       = 9901 // admin listener of every tidegate process
	VIPHTTPSPort    = 443  // VIP "https" on the L4 nodes
	VIPHTTPPort     = 80   // VIP "http" on the L4 nodes
	L7HTTPSPort     = 8443 // TLS listener of the L7 nodes
	L7HTTPPort      = 8080 // cleartext listener of the L7 nodes
	BackendHTTPPort = 8080 // echo backend
)

// Timing of the generated health checks. The values are short so that a
// test observes an L7 node marked down within about a second; production
// configurations use seconds.
const (
	CheckInterval = config.Duration(200e6)
	CheckTimeout  = config.Duration(150e6)
	CheckRise     = 2
	CheckFall     = 2
)

// L4File returns the configuration of an L4 node in mode ("userspace",
// "xdp" or "auto") with two VIPs on [VIP]: "https" on port 443 and "http" on
// port 80. Each VIP spreads connections over l7Nodes (their mid-segment
// addresses) with PROXY protocol v2. Its health checks GET each L7 node's
// admin /readyz. Tests change the returned value before writing it.
func L4File(mode string, l7Nodes []netip.Addr) *config.File {
	vip := func(name string, vipPort, realPort int) config.VIP {
		v := config.VIP{
			Name:          name,
			Address:       hostPort(VIP, vipPort),
			ProxyProtocol: "v2",
			Affinity:      "none",
			HealthCheck: &config.HealthCheck{
				Type:         "http",
				Path:         "/readyz",
				ExpectStatus: 200,
				Interval:     CheckInterval,
				Timeout:      CheckTimeout,
				Rise:         CheckRise,
				Fall:         CheckFall,
			},
		}
		for _, a := range l7Nodes {
			v.Reals = append(v.Reals, config.Real{
				Address:       hostPort(a, realPort),
				HealthAddress: hostPort(a, AdminPort),
			})
		}
		return v
	}
	return &config.File{
		Log:           config.Log{Level: "info", Format: "text"},
		Admin:         config.Admin{Address: hostPort(netip.IPv4Unspecified(), AdminPort)},
		DrainTimeout:  config.Duration(10e9),
		ShutdownDelay: config.Duration(0),
		L4: &config.L4{
			Dataplane: config.Dataplane{Mode: mode},
			VIPs: []config.VIP{
				vip("https", VIPHTTPSPort, L7HTTPSPort),
				vip("http", VIPHTTPPort, L7HTTPPort),
			},
		},
	}
}

// L7Cert is one certificate and key file of an L7 TLS listener.
type L7Cert struct {
	CertFile string
	KeyFile  string
}

// L7File returns the configuration of an L7 node. It has a TLS listener on
// port 8443 with certs, chosen by SNI with the first as the default, and a
// cleartext listener on port 8080. Both require PROXY protocol from the mid
// segment, where the L4 nodes are. One route "default" leads to the upstream
// "app" over backends (their back-segment addresses). ShutdownDelay covers
// the fall time of the L4 health checks, so the L4 nodes stop sending new
// connections before the listeners close on SIGTERM.
func L7File(certs []L7Cert, backends []netip.Addr) *config.File {
	trusted := []string{segmentPrefixes[SegmentMid].String()}
	listeners := []config.Listener{{
		Name:          "http",
		Address:       hostPort(netip.IPv4Unspecified(), L7HTTPPort),
		ProxyProtocol: config.ProxyProtocol{Trusted: trusted},
	}}
	if len(certs) > 0 {
		tls := &config.TLS{MinVersion: "1.2"}
		for _, c := range certs {
			tls.Certificates = append(tls.Certificates, config.Certificate{CertFile: c.CertFile, KeyFile: c.KeyFile})
		}
		listeners = append([]config.Listener{{
			Name:          "https",
			Address:       hostPort(netip.IPv4Unspecified(), L7HTTPSPort),
			ProxyProtocol: config.ProxyProtocol{Trusted: trusted},
			TLS:           tls,
		}}, listeners...)
	}

	app := config.Upstream{
		Name:    "app",
		Balance: "round_robin",
		HealthCheck: &config.HealthCheck{
			Type:         "http",
			Path:         "/",
			ExpectStatus: 200,
			Interval:     CheckInterval,
			Timeout:      CheckTimeout,
			Rise:         CheckRise,
			Fall:         CheckFall,
		},
	}
	for _, b := range backends {
		app.Backends = append(app.Backends, config.Backend{Address: hostPort(b, BackendHTTPPort)})
	}
	return &config.File{
		Log:           config.Log{Level: "info", Format: "text"},
		Admin:         config.Admin{Address: hostPort(netip.IPv4Unspecified(), AdminPort)},
		DrainTimeout:  config.Duration(10e9),
		ShutdownDelay: CheckInterval * (CheckFall + 3),
		L7: &config.L7{
			Listeners: listeners,
			Routes:    []config.Route{{Name: "default", Upstream: "app"}},
			Upstreams: []config.Upstream{app},
			AccessLog: config.AccessLog{Path: "stdout"},
		},
	}
}

// Patch merges the YAML mapping in YAML into the mapping at Path of a
// generated configuration, key by key, replacing keys that exist. Path uses
// the key-path syntax of configuration errors, such as "l7.routes[1]" or
// "l7", and mappings missing along it are created. Patches let a test set
// keys that the [config.File] type of its build may not have yet.
type Patch struct {
	Path string
	YAML string
}

// MarshalConfig encodes f as YAML, applies patches in order and checks that
// [config.Parse] accepts the result. A test that builds an invalid
// configuration fails before it starts a process, with every error and its
// key path.
func MarshalConfig(f *config.File, patches ...Patch) ([]byte, error) {
	var root yaml.Node
	if err := root.Encode(f); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	prune(&root)
	for _, p := range patches {
		if err := applyPatch(&root, p); err != nil {
			return nil, err
		}
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&root); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	if _, err := config.Parse(buf.Bytes()); err != nil {
		return nil, fmt.Errorf("generated config is invalid: %w\n%s", err, buf.Bytes())
	}
	return buf.Bytes(), nil
}

// WriteConfig writes f with patches to path after [MarshalConfig] has
// checked it.
func WriteConfig(path string, f *config.File, patches ...Patch) error {
	data, err := MarshalConfig(f, patches...)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

// prune drops null values and empty lists and mappings from a mapping tree.
// The decoder reads a missing key as the zero value, so the file means the
// same and shows only what a test set.
func prune(n *yaml.Node) bool {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			prune(c)
		}
		return true
	case yaml.MappingNode:
		kept := n.Content[:0]
		for i := 0; i+1 < len(n.Content); i += 2 {
			if prune(n.Content[i+1]) {
				kept = append(kept, n.Content[i], n.Content[i+1])
			}
		}
		n.Content = kept
		return len(n.Content) > 0
	case yaml.SequenceNode:
		for _, c := range n.Content {
			prune(c)
		}
		return len(n.Content) > 0
	case yaml.ScalarNode:
		return n.Tag != "!!null"
	}
	return true
}

func applyPatch(root *yaml.Node, p Patch) error {
	var frag yaml.Node
	if err := yaml.Unmarshal([]byte(p.YAML), &frag); err != nil {
		return fmt.Errorf("patch %s: invalid YAML: %w", p.Path, err)
	}
	if len(frag.Content) != 1 || frag.Content[0].Kind != yaml.MappingNode {
		return fmt.Errorf("patch %s: YAML is not a mapping", p.Path)
	}
	target := root
	if target.Kind == yaml.DocumentNode {
		target = target.Content[0]
	}
	if p.Path != "" {
		for _, part := range strings.Split(p.Path, ".") {
			key, idx, err := splitIndex(part)
			if err != nil {
				return fmt.Errorf("patch %s: %w", p.Path, err)
			}
			target = mappingValue(target, key)
			if idx < 0 {
				continue
			}
			if target.Kind != yaml.SequenceNode || idx >= len(target.Content) {
				return fmt.Errorf("patch %s: %s has no item %d", p.Path, key, idx)
			}
			target = target.Content[idx]
		}
	}
	if target.Kind != yaml.MappingNode {
		return fmt.Errorf("patch %s: target is not a mapping", p.Path)
	}
	src := frag.Content[0].Content
	for i := 0; i+1 < len(src); i += 2 {
		*mappingValue(target, src[i].Value) = *src[i+1]
	}
	return nil
}

// splitIndex splits "routes[2]" into "routes" and 2, and "l7" into "l7" and
// -1.
func splitIndex(part string) (string, int, error) {
	key, rest, ok := strings.Cut(part, "[")
	if !ok {
		return part, -1, nil
	}
	n, err := strconv.Atoi(strings.TrimSuffix(rest, "]"))
	if err != nil || !strings.HasSuffix(rest, "]") || n < 0 {
		return "", 0, fmt.Errorf("invalid path element %q", part)
	}
	return key, n, nil
}

// mappingValue returns the value node of key in the mapping m, adding an
// empty mapping under key when it is missing.
func mappingValue(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	k := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}
	v := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	m.Content = append(m.Content, k, v)
	return v
}

func hostPort(a netip.Addr, port int) string {
	return netip.AddrPortFrom(a, uint16(port)).String()
}
