package topology

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"

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

// MarshalConfig encodes f as YAML and checks that [config.Parse] accepts the
// result, so a test that builds an invalid configuration fails before it
// starts a process, with every error and its key path.
func MarshalConfig(f *config.File) ([]byte, error) {
	var root yaml.Node
	if err := root.Encode(f); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	prune(&root)
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

// WriteConfig writes f to path after [MarshalConfig] has checked it.
func WriteConfig(path string, f *config.File) error {
	data, err := MarshalConfig(f)
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

func hostPort(a netip.Addr, port int) string {
	return netip.AddrPortFrom(a, uint16(port)).String()
}
