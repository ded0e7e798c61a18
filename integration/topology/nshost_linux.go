//go:build linux

package topology

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"github.com/vishvananda/netns"
)

// Host is one network namespace of a topology.
type Host struct {
	// Name is the role and index, such as "client-0" or "l7-1".
	Name  string
	Role  Role
	Index int
	// Namespace is the name of the network namespace under /run/netns, so
	// "ip netns exec NAMESPACE ..." reaches it.
	Namespace  string
	Interfaces []Interface

	ns   netns.NsHandle
	topo *Topology
}

// Interface is one veth end inside a host.
type Interface struct {
	Name    string
	Segment Segment
	Prefix  netip.Prefix
	// PeerName is the other end of the veth pair, a bridge port inside the
	// switch namespace [Topology.SwitchNamespace]. The XDP engine needs a
	// program on it to receive redirected frames in native mode.
	PeerName string
}

// Addr returns the host's address on seg, or the zero Addr when the host
// does not join seg.
func (h *Host) Addr(seg Segment) netip.Addr {
	for _, ifc := range h.Interfaces {
		if ifc.Segment == seg {
			return ifc.Prefix.Addr()
		}
	}
	return netip.Addr{}
}

// Interface returns the host's interface on seg.
func (h *Host) Interface(seg Segment) (Interface, bool) {
	for _, ifc := range h.Interfaces {
		if ifc.Segment == seg {
			return ifc, true
		}
	}
	return Interface{}, false
}

// Do runs fn on an OS thread that is inside the host's network namespace.
// Sockets that fn creates stay in that namespace after Do returns, so
// listeners and connections made in fn can be used from any goroutine.
func (h *Host) Do(fn func() error) error {
	return inNamespace(h.ns, fn)
}

// inNamespace runs fn on a fresh locked OS thread switched into ns. When the
// thread cannot be switched back, it stays locked so that the runtime
// discards it when the goroutine ends instead of reusing it for other work.
func inNamespace(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current network namespace: %w", err)
			return
		}
		defer orig.Close()

		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		fnErr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("restore network namespace: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}

// Listen opens a listener inside the host's namespace.
func (h *Host) Listen(network, address string) (net.Listener, error) {
	var ln net.Listener
	err := h.Do(func() error {
		var err error
		ln, err = net.Listen(network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s in %s: %w", address, h.Name, err)
	}
	return ln, nil
}

// DialContext opens a connection from inside the host's namespace.
func (h *Host) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var conn net.Conn
	err := h.Do(func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, address)
		return err
	})
	if err != nil {
		return nil, err
	}
	return conn, nil
}

// Transport returns an HTTP transport whose connections start inside the
// host's namespace. tlsConfig may be nil for cleartext HTTP. HTTP/2 is
// negotiated through ALPN when tlsConfig allows it.
func (h *Host) Transport(tlsConfig *tls.Config) *http.Transport {
	return &http.Transport{
		DialContext:           h.DialContext,
		TLSClientConfig:       tlsConfig,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       30 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second,
	}
}

// HTTPClient returns a client using [Host.Transport] with a 15-second
// overall timeout per request.
func (h *Host) HTTPClient(tlsConfig *tls.Config) *http.Client {
	return &http.Client{Transport: h.Transport(tlsConfig), Timeout: 15 * time.Second}
}

// SetSysctl writes value to the sysctl at key (such as "net/ipv4/ip_forward")
// inside the host's namespace.
func (h *Host) SetSysctl(key, value string) error {
	return h.Do(func() error {
		// /proc/sys/net resolves to the network namespace of the thread
		// that opens the file, which Do has switched.
		path := filepath.Join("/proc/sys", key)
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			return fmt.Errorf("set sysctl %s=%s in %s: %w", key, value, h.Name, err)
		}
		return nil
	})
}

// Run runs a command to completion inside the host's namespace and returns
// its combined output. It suits short tools such as ethtool or ss.
func (h *Host) Run(name string, args ...string) (string, error) {
	var out []byte
	err := h.Do(func() error {
		var err error
		out, err = exec.Command(name, args...).CombinedOutput()
		return err
	})
	if err != nil {
		return string(out), fmt.Errorf("run %s in %s: %w: %s", name, h.Name, err, out)
	}
	return string(out), nil
}

// DisableTxChecksum turns off transmit checksum offload on the host's
// interface on seg. Senders behind a native XDP program on a veth need it
// because native XDP on veth drops the offload, which leaves partial
// checksums in frames that the program rewrites.
func (h *Host) DisableTxChecksum(seg Segment) error {
	ifc, ok := h.Interface(seg)
	if !ok {
		return fmt.Errorf("disable tx checksum: %s has no interface on %s", h.Name, seg)
	}
	_, err := h.Run("ethtool", "-K", ifc.Name, "tx", "off")
	return err
}
