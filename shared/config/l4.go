package config

import (
	"math/big"
)

// L4 is the configuration of an L4 balancer process.
type L4 struct {
	Dataplane Dataplane `yaml:"dataplane"`
	VIPs      []VIP     `yaml:"vips"`
}

// Dataplane selects the L4 engine.
type Dataplane struct {
	// Mode is "userspace" (no BPF), "xdp" (fail when XDP cannot attach) or
	// "auto" (XDP in front of userspace when possible).
	Mode string `yaml:"mode"`

	// The keys below configure the XDP engine; the userspace mode ignores
	// them. See dataplane.go for defaults and checks.

	// Interfaces are the links the XDP program attaches to: the
	// client-facing one and the one towards the reals (the same link in a
	// one-arm setup). Required for xdp; auto without them stays userspace.
	Interfaces []string `yaml:"interfaces"`
	// Generic attaches in generic (skb) mode, for drivers without native
	// XDP. Slower, and senders need TSO and GSO off.
	Generic bool `yaml:"generic"`
	// SNATAddress is the L4's IPv4 address towards the reals, the source
	// of every XDP connection to a real. Required for xdp.
	SNATAddress string `yaml:"snat_address"`
	// SNATPortMin and SNATPortMax bound the source ports of XDP
	// connections. The range must lie outside the kernel's ephemeral
	// ports (net.ipv4.ip_local_port_range).
	SNATPortMin int `yaml:"snat_port_min"`
	SNATPortMax int `yaml:"snat_port_max"`
	// FlowTableSize is the number of connections the XDP flow table holds;
	// new connections beyond it go to the userspace engine.
	FlowTableSize int `yaml:"flow_table_size"`
	// MaxVIPs is the number of VIPs the XDP engine can carry.
	MaxVIPs int `yaml:"max_vips"`
	// PinPath is a directory on a bpffs mount where maps and links are
	// pinned, so that a restart keeps XDP connections. Empty disables
	// pinning: XDP detaches when the process exits.
	PinPath string `yaml:"pin_path"`
	// IdleTimeout expires XDP connections without packets.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// ClosingTimeout expires XDP connections after a FIN or RST, and
	// those whose handshake does not complete.
	ClosingTimeout Duration `yaml:"closing_timeout"`
}

// VIP is one virtual TCP service: a listen address and the reals (L7 nodes)
// behind it.
type VIP struct {
	Name    string `yaml:"name"`
	Address string `yaml:"address"`

	// ProxyProtocol is the PROXY protocol version written to reals: "v2"
	// (default) or "v1".
	ProxyProtocol string `yaml:"proxy_protocol"`

	// Affinity "client" hashes the client address alone so one client always
	// reaches the same real; "none" (default) hashes the whole 5-tuple.
	Affinity string `yaml:"affinity"`

	// TableSize is the Maglev lookup table size; it must be prime.
	TableSize uint64 `yaml:"table_size"`

	ConnectTimeout Duration `yaml:"connect_timeout"`
	IdleTimeout    Duration `yaml:"idle_timeout"`
	// MaxConnections caps concurrent client connections; 0 means no cap.
	MaxConnections int `yaml:"max_connections"`
	// DialAttempts is how many reals to try, in Maglev preference order,
	// before the client connection is closed.
	DialAttempts int `yaml:"dial_attempts"`
	// TCPKeepAlive turns on TCP keep-alive probes on the client and the
	// real socket of each connection, with this much idle time before the
	// first probe (TCP_KEEPIDLE). The probe interval and count stay at the
	// kernel's values (net.ipv4.tcp_keepalive_intvl and _probes). 0, the
	// default, leaves keep-alive off, as HAProxy does without
	// option clitcpka and srvtcpka: idle_timeout already closes idle
	// connections, and each socket then saves the setsockopt calls.
	TCPKeepAlive Duration `yaml:"tcp_keepalive"`

	HealthCheck *HealthCheck `yaml:"health_check"`
	Reals       []Real       `yaml:"reals"`
}

// Real is one L7 node behind a VIP.
type Real struct {
	Address string `yaml:"address"`
	// Weight is relative; 0 drains the real (no new connections).
	Weight *int `yaml:"weight"`
	// HealthAddress overrides the address health checks connect to, for
	// example the L7's admin listener.
	HealthAddress string `yaml:"health_address"`
}

// HealthCheck configures active checks; both tiers use it.
type HealthCheck struct {
	// Type is "tcp" (connect only) or "http" (GET Path, expect ExpectStatus).
	Type         string   `yaml:"type"`
	Path         string   `yaml:"path"`
	ExpectStatus int      `yaml:"expect_status"`
	Interval     Duration `yaml:"interval"`
	Timeout      Duration `yaml:"timeout"`
	// Rise and Fall are the consecutive successes and failures needed to
	// mark a target up or down.
	Rise int `yaml:"rise"`
	Fall int `yaml:"fall"`
	// ProxyProtocol sends a PROXY header before the check, for reals that
	// require one on the checked port.
	ProxyProtocol bool `yaml:"proxy_protocol"`
	// TLS wraps the HTTP check in TLS without verifying the certificate.
	TLS bool `yaml:"tls"`
}

// L4 defaults.
const (
	DefaultTableSize      = 65537
	DefaultConnectTimeout = Duration(2e9)
	DefaultIdleTimeout    = Duration(300e9)
	DefaultDialAttempts   = 3

	// MaxTCPKeepAlive is the largest TCP_KEEPIDLE Linux accepts
	// (MAX_TCP_KEEPIDLE, 32767 seconds).
	MaxTCPKeepAlive = Duration(32767e9)

	// MaxRealWeight bounds a real's weight, so a weighted Maglev build stays
	// proportional without huge rounds.
	MaxRealWeight = 1000
)

// RealWeight returns the real's weight, 1 when unset.
func (r Real) RealWeight() int {
	if r.Weight == nil {
		return 1
	}
	return *r.Weight
}

func (c *L4) setDefaults() {
	if c.Dataplane.Mode == "" {
		c.Dataplane.Mode = "userspace"
	}
	c.Dataplane.setDefaults()
	for i := range c.VIPs {
		v := &c.VIPs[i]
		if v.ProxyProtocol == "" {
			v.ProxyProtocol = "v2"
		}
		if v.Affinity == "" {
			v.Affinity = "none"
		}
		if v.TableSize == 0 {
			v.TableSize = DefaultTableSize
		}
		if v.ConnectTimeout == 0 {
			v.ConnectTimeout = DefaultConnectTimeout
		}
		if v.IdleTimeout == 0 {
			v.IdleTimeout = DefaultIdleTimeout
		}
		if v.DialAttempts == 0 {
			v.DialAttempts = DefaultDialAttempts
		}
		if v.HealthCheck != nil {
			v.HealthCheck.setDefaults()
		}
	}
}

func (h *HealthCheck) setDefaults() {
	if h.Type == "" {
		h.Type = "tcp"
	}
	if h.Type == "http" && h.Path == "" {
		h.Path = "/readyz"
	}
	if h.ExpectStatus == 0 {
		h.ExpectStatus = 200
	}
	if h.Interval == 0 {
		h.Interval = Duration(2e9)
	}
	if h.Timeout == 0 {
		h.Timeout = Duration(1e9)
	}
	if h.Rise == 0 {
		h.Rise = 2
	}
	if h.Fall == 0 {
		h.Fall = 3
	}
}

func (c *L4) validate(path string, errs *Errors) {
	switch c.Dataplane.Mode {
	case "userspace", "xdp", "auto":
	default:
		errs.add(join(path, "dataplane.mode"), "%q is not one of userspace, xdp, auto", c.Dataplane.Mode)
	}
	c.Dataplane.validate(join(path, "dataplane"), errs)
	if len(c.VIPs) == 0 {
		errs.add(join(path, "vips"), "is empty (at least one VIP is required)")
	}
	names := map[string]int{}
	addrs := map[string]int{}
	for i := range c.VIPs {
		vp := index(join(path, "vips"), i)
		c.VIPs[i].validate(vp, errs)
		if n := c.VIPs[i].Name; n != "" {
			if j, dup := names[n]; dup {
				errs.add(join(vp, "name"), "%q is already used by vips[%d]", n, j)
			} else {
				names[n] = i
			}
		}
		if a := c.VIPs[i].Address; a != "" {
			if j, dup := addrs[a]; dup {
				errs.add(join(vp, "address"), "%q is already used by vips[%d]", a, j)
			} else {
				addrs[a] = i
			}
		}
	}
}

func (v *VIP) validate(path string, errs *Errors) {
	if v.Name == "" {
		errs.add(join(path, "name"), "is missing")
	}
	if v.Address == "" {
		errs.add(join(path, "address"), "is missing")
	} else {
		checkHostPort(errs, join(path, "address"), v.Address)
	}
	switch v.ProxyProtocol {
	case "v1", "v2":
	default:
		errs.add(join(path, "proxy_protocol"), "%q is not one of v1, v2", v.ProxyProtocol)
	}
	switch v.Affinity {
	case "none", "client":
	default:
		errs.add(join(path, "affinity"), "%q is not one of none, client", v.Affinity)
	}
	if !big.NewInt(int64(v.TableSize)).ProbablyPrime(20) || v.TableSize > 1<<24 {
		errs.add(join(path, "table_size"), "%d is not a prime at most 16777216 (65537 is a good default)", v.TableSize)
	}
	if v.TableSize < uint64(len(v.Reals)) {
		errs.add(join(path, "table_size"), "%d is smaller than the number of reals (%d)", v.TableSize, len(v.Reals))
	}
	if v.MaxConnections < 0 {
		errs.add(join(path, "max_connections"), "%d is negative", v.MaxConnections)
	}
	if v.DialAttempts < 1 {
		errs.add(join(path, "dial_attempts"), "%d must be at least 1", v.DialAttempts)
	}
	if v.TCPKeepAlive != 0 && (v.TCPKeepAlive < Duration(1e9) || v.TCPKeepAlive > MaxTCPKeepAlive) {
		errs.add(join(path, "tcp_keepalive"), "%s is outside 1s..%s (0s turns keep-alive off)", v.TCPKeepAlive, MaxTCPKeepAlive)
	}
	if v.HealthCheck != nil {
		v.HealthCheck.validate(join(path, "health_check"), errs)
	}
	if len(v.Reals) == 0 {
		errs.add(join(path, "reals"), "is empty (at least one real is required)")
	}
	seen := map[string]int{}
	for i, r := range v.Reals {
		rp := index(join(path, "reals"), i)
		if r.Address == "" {
			errs.add(join(rp, "address"), "is missing")
		} else if checkHostPort(errs, join(rp, "address"), r.Address) {
			if j, dup := seen[r.Address]; dup {
				errs.add(join(rp, "address"), "%q is already used by reals[%d]", r.Address, j)
			}
			seen[r.Address] = i
		}
		if r.Weight != nil && (*r.Weight < 0 || *r.Weight > MaxRealWeight) {
			errs.add(join(rp, "weight"), "%d is outside 0..%d", *r.Weight, MaxRealWeight)
		}
		if r.HealthAddress != "" {
			checkHostPort(errs, join(rp, "health_address"), r.HealthAddress)
		}
	}
}

func (h *HealthCheck) validate(path string, errs *Errors) {
	switch h.Type {
	case "tcp", "http":
	default:
		errs.add(join(path, "type"), "%q is not one of tcp, http", h.Type)
	}
	if h.Type == "http" && (h.Path == "" || h.Path[0] != '/') {
		errs.add(join(path, "path"), "%q must start with /", h.Path)
	}
	if h.ExpectStatus < 100 || h.ExpectStatus > 599 {
		errs.add(join(path, "expect_status"), "%d is not an HTTP status code", h.ExpectStatus)
	}
	if h.Timeout > h.Interval {
		errs.add(join(path, "timeout"), "%s is longer than the interval %s", h.Timeout, h.Interval)
	}
	if h.Rise < 1 {
		errs.add(join(path, "rise"), "%d must be at least 1", h.Rise)
	}
	if h.Fall < 1 {
		errs.add(join(path, "fall"), "%d must be at least 1", h.Fall)
	}
}
