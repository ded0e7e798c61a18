//go:build linux

package topology

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tidegate/tidegate/shared/config"
)

// BinaryEnv names the environment variable that points the package at an
// already built tidegate binary instead of building ./cmd/tidegate.
const BinaryEnv = "TIDEGATE_BIN"

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary returns the path of the tidegate binary under test: $TIDEGATE_BIN
// when set, otherwise ./cmd/tidegate built once per test process into a
// temporary directory. It fails tb when the build fails.
func Binary(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv(BinaryEnv); p != "" {
		return p
	}
	buildOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-bin-", NamePrefix, os.Getpid()))
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "tidegate")
		cmd := exec.Command("go", "build", "-o", buildPath, "./cmd/tidegate")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/tidegate: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return buildPath
}

// ReadyTimeout bounds how long the Start functions wait for a process to
// become ready.
const ReadyTimeout = 20 * time.Second

// StartBackend runs "tidegate backend" on the backend host i, listening on
// its back-segment address, port 8080, and waits until it accepts
// connections.
func (t *Topology) StartBackend(i int) (*Process, error) {
	h := t.Backends[i]
	addr := hostPort(h.Addr(SegmentBack), BackendHTTPPort)
	p, err := h.Start("backend", Binary(t.tb), "backend", "--listen", addr, "--name", h.Name)
	if err != nil {
		return nil, err
	}
	if err := p.WaitTCP(addr, ReadyTimeout); err != nil {
		return nil, err
	}
	return p, nil
}

// StartL7 writes f with patches as the configuration of L7 node i, runs
// "tidegate l7" with it and waits for admin /readyz to return 200.
func (t *Topology) StartL7(i int, f *config.File, patches ...Patch) (*Process, error) {
	return t.startTier(t.L7[i], "l7", f, patches)
}

// StartL4 writes f with patches as the configuration of L4 node i, runs
// "tidegate l4" with it and waits for admin /readyz to return 200.
func (t *Topology) StartL4(i int, f *config.File, patches ...Patch) (*Process, error) {
	return t.startTier(t.L4[i], "l4", f, patches)
}

// ConfigPath returns where the configuration of a tier process on h is
// written. Tests rewrite it before sending SIGHUP.
func (t *Topology) ConfigPath(h *Host, tier string) string {
	return filepath.Join(t.Dir, h.Name+"."+tier+".yaml")
}

func (t *Topology) startTier(h *Host, tier string, f *config.File, patches []Patch) (*Process, error) {
	path := t.ConfigPath(h, tier)
	if err := WriteConfig(path, f, patches...); err != nil {
		return nil, fmt.Errorf("%s on %s: %w", tier, h.Name, err)
	}
	argv := append([]string{Binary(t.tb), tier, "--config", path}, t.extraArgs...)
	if tier == "l4" && f.L4 != nil && f.L4.Dataplane.Mode != "userspace" {
		// Without --detach the L4 leaves its XDP program attached and its
		// maps pinned on exit, for the next start to take over.
		argv = append(argv, "--detach")
	}
	p, err := h.Start(tier, argv...)
	if err != nil {
		return nil, err
	}
	port := AdminPort
	if f.Admin.Address != "" {
		if ap, err := netip.ParseAddrPort(f.Admin.Address); err == nil {
			port = int(ap.Port())
		}
	}
	if err := p.WaitReady(port, ReadyTimeout); err != nil {
		return nil, err
	}
	return p, nil
}

// L7Addrs returns the mid-segment address of every L7 node, where the L4
// nodes reach them.
func (t *Topology) L7Addrs() []netip.Addr { return addrs(t.L7, SegmentMid) }

// BackendAddrs returns the back-segment address of every backend.
func (t *Topology) BackendAddrs() []netip.Addr { return addrs(t.Backends, SegmentBack) }

func addrs(hosts []*Host, seg Segment) []netip.Addr {
	out := make([]netip.Addr, len(hosts))
	for i, h := range hosts {
		out[i] = h.Addr(seg)
	}
	return out
}

// setXDP fills the XDP keys of an L4 node's configuration: both of its
// interfaces, its mid-segment address as the SNAT source, and a pin
// directory on the topology's own bpffs. Teardown removes those pins, and
// concurrent tests never share them.
func (t *Topology) setXDP(h *Host, f *config.File) error {
	d := &f.L4.Dataplane
	d.Interfaces = nil
	for _, ifc := range h.Interfaces {
		d.Interfaces = append(d.Interfaces, ifc.Name)
	}
	d.SNATAddress = h.Addr(SegmentMid).String()
	pins, err := t.PinDir(h.Name)
	if err != nil {
		return err
	}
	d.PinPath = pins
	return nil
}

// PinDir returns a directory path for the BPF pins of name on a bpffs of the
// topology's own, which it mounts at Dir/bpffs on first use. The host may
// have no bpffs at /sys/fs/bpf, and a private mount keeps concurrent tests
// apart. Teardown unmounts it, which removes every pin.
func (t *Topology) PinDir(name string) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.bpffs == "" {
		dir := filepath.Join(t.Dir, "bpffs")
		if err := os.Mkdir(dir, 0o700); err != nil {
			return "", fmt.Errorf("create bpffs mount point: %w", err)
		}
		if err := syscall.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
			return "", fmt.Errorf("mount bpffs at %s: %w", dir, err)
		}
		t.bpffs = dir
	}
	return filepath.Join(t.bpffs, name), nil
}

// ChainOptions configures [Topology.StartChain].
type ChainOptions struct {
	// Mode is the L4 dataplane mode: "userspace" (default), "xdp" or "auto".
	Mode string
	// ServerNames get one certificate each on the L7 TLS listener. The
	// first is the default certificate. Empty means "app.tidegate.test".
	ServerNames []string
	// L7, when set, changes the generated configuration of L7 node i
	// before it is written.
	L7 func(i int, f *config.File)
	// L4, when set, changes the generated configuration of L4 node i.
	L4 func(i int, f *config.File)
	// L7Patches are applied to the configuration of every L7 node.
	L7Patches []Patch
	// ExtraArgs are added to the command line of every L4 and L7 process,
	// such as "--log-level debug".
	ExtraArgs []string
}

// Chain is the set of processes that [Topology.StartChain] started, with
// the configuration each tier process runs. Tests change a configuration,
// write it with [Chain.Rewrite] and send SIGHUP.
type Chain struct {
	CA       *CA
	Backends []*Process
	L7       []*Process
	L4       []*Process

	L7Files   []*config.File
	L4Files   []*config.File
	L7Patches []Patch

	topo *Topology
}

// RewriteL7 writes the configuration of L7 node i from c.L7Files[i] and the
// chain's patches. The process reads it on its next SIGHUP.
func (c *Chain) RewriteL7(i int) error {
	return WriteConfig(c.topo.ConfigPath(c.topo.L7[i], "l7"), c.L7Files[i], c.L7Patches...)
}

// RewriteL4 writes the configuration of L4 node i from c.L4Files[i].
func (c *Chain) RewriteL4(i int) error {
	return WriteConfig(c.topo.ConfigPath(c.topo.L4[i], "l4"), c.L4Files[i])
}

// StartChain starts every backend, then every L7 node, then every L4 node,
// each with the generated configuration, and waits for each to be ready.
func (t *Topology) StartChain(opts ChainOptions) (*Chain, error) {
	if opts.Mode == "" {
		opts.Mode = "userspace"
	}
	if len(opts.ServerNames) == 0 {
		opts.ServerNames = []string{"app.tidegate.test"}
	}
	ca, err := NewCA()
	if err != nil {
		return nil, err
	}
	var certs []L7Cert
	for i, name := range opts.ServerNames {
		certFile, keyFile, err := ca.Issue(t.Dir, "server"+strconv.Itoa(i), name)
		if err != nil {
			return nil, err
		}
		certs = append(certs, L7Cert{CertFile: certFile, KeyFile: keyFile})
	}

	t.extraArgs = opts.ExtraArgs
	c := &Chain{CA: ca, L7Patches: opts.L7Patches, topo: t}
	for i := range t.Backends {
		p, err := t.StartBackend(i)
		if err != nil {
			return c, err
		}
		c.Backends = append(c.Backends, p)
	}
	for i := range t.L7 {
		f := L7File(certs, t.BackendAddrs())
		if opts.L7 != nil {
			opts.L7(i, f)
		}
		c.L7Files = append(c.L7Files, f)
		p, err := t.StartL7(i, f, opts.L7Patches...)
		if err != nil {
			return c, err
		}
		c.L7 = append(c.L7, p)
	}
	for i, h := range t.L4 {
		f := L4File(opts.Mode, t.L7Addrs())
		if opts.Mode != "userspace" {
			if err := t.setXDP(h, f); err != nil {
				return c, err
			}
		}
		if opts.L4 != nil {
			opts.L4(i, f)
		}
		c.L4Files = append(c.L4Files, f)
		p, err := t.StartL4(i, f)
		if err != nil {
			return c, err
		}
		c.L4 = append(c.L4, p)
	}
	return c, nil
}

// Main runs the tests of m, then removes the binary that [Binary] built and
// sweeps leftovers of dead runs. Test packages that use the topology call
// it from TestMain: os.Exit(topology.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if buildPath != "" {
		_ = os.RemoveAll(filepath.Dir(buildPath))
	}
	if os.Geteuid() == 0 {
		if err := Sweep(); err != nil {
			fmt.Fprintf(os.Stderr, "topology: sweep: %v\n", err)
		}
	}
	return code
}
