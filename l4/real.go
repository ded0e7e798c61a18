package l4

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/tidegate/tidegate/l4/proxyheader"
	"github.com/tidegate/tidegate/shared/config"
	"github.com/tidegate/tidegate/shared/health"
)

// Real is one L7 node behind a VIP: its address, its weight and its health.
// Weight and health change at run time, and both engines read them only through
// the VIP's published [Snapshot].
type Real struct {
	Address string

	configWeight int          // weight from the configuration file
	weight       atomic.Int64 // current weight, set by config or the admin API
	healthy      atomic.Bool

	mu      sync.Mutex // guards checker and checkKey
	checker *health.Checker
	// checkKey is the health-check configuration the checker was built from,
	// so a reload replaces the checker only when that configuration changed.
	checkKey string
	lastErr  atomic.Pointer[string]
}

func newReal(rc config.Real) *Real {
	r := &Real{Address: rc.Address, configWeight: rc.RealWeight()}
	r.weight.Store(int64(r.configWeight))
	r.healthy.Store(true)
	return r
}

// Weight returns the current weight. Weight 0 means draining.
func (r *Real) Weight() int { return int(r.weight.Load()) }

// Healthy reports the last health state. A real without health checks is
// always healthy.
func (r *Real) Healthy() bool { return r.healthy.Load() }

// LastError returns the error that last marked the real down, or "".
func (r *Real) LastError() string {
	if p := r.lastErr.Load(); p != nil {
		return *p
	}
	return ""
}

// checkKeyFor returns a string that changes whenever anything the checker
// of rc depends on changes.
func checkKeyFor(hc *config.HealthCheck, rc config.Real, proxyVersion string) string {
	if hc == nil {
		return ""
	}
	return fmt.Sprintf("%+v|%s|%s|%s", *hc, rc.Address, rc.HealthAddress, proxyVersion)
}

// newProbe builds the health probe for rc as hc describes it.
func newProbe(hc *config.HealthCheck, rc config.Real, proxyVersion string) health.Probe {
	addr := rc.Address
	if rc.HealthAddress != "" {
		addr = rc.HealthAddress
	}
	if hc.Type == "tcp" {
		return health.TCPProbe(addr)
	}
	p := health.HTTPProbe{Address: addr, Path: hc.Path, Expect: hc.ExpectStatus, TLS: hc.TLS}
	if hc.ProxyProtocol {
		version := 2
		if proxyVersion == "v1" {
			version = 1
		}
		ids := proxyheader.NewIDSource()
		p.Preamble = func(local, remote net.Addr) ([]byte, error) {
			return proxyheader.Build(version, addrPort(local), addrPort(remote), ids.Next())
		}
	}
	return p.Probe()
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	return netip.AddrPort{}
}
