//go:build integration && linux

package topology

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tidegate/tidegate/shared/echo"
)

func TestTopologyBackendOverVeth(t *testing.T) {
	topo := New(t, Spec{})
	for i := range topo.Backends {
		if _, err := topo.StartBackend(i); err != nil {
			t.Fatal(err)
		}
	}

	// Each L7 node reaches each backend across the back segment, and the
	// backend reports the L7 node's own address as the peer.
	for _, l7 := range topo.L7 {
		for _, b := range topo.Backends {
			url := fmt.Sprintf("http://%s/probe", hostPort(b.Addr(SegmentBack), BackendHTTPPort))
			got := getEcho(t, l7, url)
			if got.Backend != b.Name {
				t.Errorf("GET %s from %s: backend %q, want %q", url, l7.Name, got.Backend, b.Name)
			}
			if host, _, _ := net.SplitHostPort(got.RemoteAddr); host != l7.Addr(SegmentBack).String() {
				t.Errorf("GET %s from %s: backend saw %s, want %s", url, l7.Name, got.RemoteAddr, l7.Addr(SegmentBack))
			}
		}
	}
}

func TestTopologyRoutesThroughL4(t *testing.T) {
	topo := New(t, Spec{Clients: 2})
	l7 := topo.L7[1]
	addr := hostPort(l7.Addr(SegmentMid), BackendHTTPPort)
	p, err := l7.Start("backend", Binary(t), "backend", "--listen", addr, "--name", l7.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitTCP(addr, ReadyTimeout); err != nil {
		t.Fatal(err)
	}

	// The L4 node forwards plain IP between the front and mid segments, so
	// the server reports each client's own address as the peer.
	for _, c := range topo.Clients {
		got := getEcho(t, c, "http://"+addr+"/")
		if host, _, _ := net.SplitHostPort(got.RemoteAddr); host != c.Addr(SegmentFront).String() {
			t.Errorf("GET from %s: server saw %s, want %s", c.Name, got.RemoteAddr, c.Addr(SegmentFront))
		}
	}
}

func TestAttachXDPPassKeepsForwarding(t *testing.T) {
	topo := New(t, Spec{})
	if err := topo.AttachXDPPass(topo.L4...); err != nil {
		t.Fatal(err)
	}
	for _, ifc := range topo.L4[0].Interfaces {
		out, err := topo.L4[0].Run("ip", "netns", "exec", topo.SwitchNamespace, "ip", "-details", "link", "show", ifc.PeerName)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "xdp") {
			t.Errorf("peer %s shows no XDP program:\n%s", ifc.PeerName, out)
		}
	}

	// Frames from the L4 node pass through the programs on its peers.
	l7 := topo.L7[0]
	addr := hostPort(l7.Addr(SegmentMid), BackendHTTPPort)
	p, err := l7.Start("backend", Binary(t), "backend", "--listen", addr, "--name", l7.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitTCP(addr, ReadyTimeout); err != nil {
		t.Fatal(err)
	}
	got := getEcho(t, topo.Clients[0], "http://"+addr+"/")
	if host, _, _ := net.SplitHostPort(got.RemoteAddr); host != topo.Clients[0].Addr(SegmentFront).String() {
		t.Errorf("server saw %s, want the client %s", got.RemoteAddr, topo.Clients[0].Addr(SegmentFront))
	}
}

func TestTopologyIsolatesBackends(t *testing.T) {
	topo := New(t, Spec{})
	if _, err := topo.StartBackend(0); err != nil {
		t.Fatal(err)
	}
	addr := hostPort(topo.Backends[0].Addr(SegmentBack), BackendHTTPPort)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := topo.Clients[0].DialContext(ctx, "tcp", addr)
	if err == nil {
		conn.Close()
		t.Fatalf("dial %s from %s succeeded, want no route (backends sit behind the L7 nodes)", addr, topo.Clients[0].Name)
	}
}

func TestTopologyVIPOnL4(t *testing.T) {
	topo := New(t, Spec{L4Nodes: 2})
	for _, l4 := range topo.L4 {
		ln, err := l4.Listen("tcp", hostPort(VIP, 80))
		if err != nil {
			t.Fatalf("listen on the VIP in %s: %v", l4.Name, err)
		}
		ln.Close()
	}
	out, err := topo.Clients[0].Run("ip", "route", "show", "default")
	if err != nil {
		t.Fatal(err)
	}
	for _, l4 := range topo.L4 {
		if !strings.Contains(out, l4.Addr(SegmentFront).String()) {
			t.Errorf("client default route %q has no next hop %s", out, l4.Addr(SegmentFront))
		}
	}
}

func TestTopologyInProcessListener(t *testing.T) {
	topo := New(t, Spec{})
	b := topo.Backends[0]
	ln, err := b.Listen("tcp", hostPort(b.Addr(SegmentBack), 9000))
	if err != nil {
		t.Fatal(err)
	}
	h := &echo.Handler{Name: "in-process"}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })

	got := getEcho(t, topo.L7[0], "http://"+ln.Addr().String()+"/x")
	if got.Backend != "in-process" {
		t.Errorf("backend = %q, want in-process", got.Backend)
	}
	if h.Count() != 1 {
		t.Errorf("handler count = %d, want 1", h.Count())
	}
}

func TestTopologyCloseRemovesEverything(t *testing.T) {
	inner := &recordingTB{TB: t}
	topo := New(inner, Spec{})
	p, err := topo.StartBackend(0)
	if err != nil {
		t.Fatal(err)
	}
	namespaces := []string{topo.SwitchNamespace}
	for _, h := range topo.Hosts() {
		namespaces = append(namespaces, h.Namespace)
	}
	dir := topo.Dir

	inner.runCleanups()

	if processAlive(p.PID) && !zombie(p.PID) {
		t.Errorf("process %d still runs after Close", p.PID)
	}
	for _, ns := range namespaces {
		if _, err := os.Stat(netnsDir + "/" + ns); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s still exists after Close (stat: %v)", ns, err)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory %s still exists after Close (stat: %v)", dir, err)
	}
}

func TestCloseDumpsLogsOnFailure(t *testing.T) {
	inner := &recordingTB{TB: t, failed: true}
	topo := New(inner, Spec{})
	if _, err := topo.StartBackend(1); err != nil {
		t.Fatal(err)
	}
	inner.runCleanups()

	all := strings.Join(inner.logs, "\n")
	if !strings.Contains(all, "backend backend-1 listening on") {
		t.Errorf("failure dump lacks the backend's output:\n%s", all)
	}
	if !strings.Contains(all, "addresses in l4-0") || !strings.Contains(all, "10.99.2.1/24") {
		t.Errorf("failure dump lacks the L4 node's addresses:\n%s", all)
	}
}

func TestPinDirUnmountedOnClose(t *testing.T) {
	inner := &recordingTB{TB: t}
	topo := New(inner, Spec{})
	pins, err := topo.PinDir("l4-0")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(pins, 0o700); err != nil {
		t.Fatalf("create pin directory on the topology's bpffs: %v", err)
	}
	mnt := filepath.Dir(pins)
	if !mounted(t, mnt) {
		t.Fatalf("%s is not a mount point after PinDir", mnt)
	}

	inner.runCleanups()

	if mounted(t, mnt) {
		t.Errorf("%s is still mounted after Close", mnt)
	}
	if _, err := os.Stat(mnt); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists after Close (stat: %v)", mnt, err)
	}
}

// mounted reports whether path is a mount point of this process.
func mounted(t *testing.T, path string) bool {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 4 && fields[4] == path {
			return true
		}
	}
	return false
}

func TestSweepRemovesDeadRunLeftovers(t *testing.T) {
	RequireRoot(t)
	// The PID of a process that has exited plays the part of a test process
	// that crashed.
	done := exec.Command("true")
	if err := done.Run(); err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("%s%d-1-", NamePrefix, done.Process.Pid)
	name := prefix + "leftover"
	path := netnsDir + "/" + name
	t.Cleanup(func() { _ = removeNamed(prefix) })

	// The process enters its own namespace before the namespace gets its
	// name, because a concurrent test process may sweep the name at once.
	sleeper := exec.Command("sleep", "60")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- sleeper.Wait() }()
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	nsPath := fmt.Sprintf("/proc/%d/ns/net", sleeper.Process.Pid)
	if err := syscall.Mount(nsPath, path, "", syscall.MS_BIND, ""); err != nil {
		_ = sleeper.Process.Kill()
		t.Fatalf("bind %s to %s: %v", nsPath, path, err)
	}

	pin := bpfFSDir + "/" + prefix + "pins"
	pinMade := os.Mkdir(pin, 0o700) == nil
	tmp := filepath.Join(os.TempDir(), prefix+"dir-1")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}

	if err := Sweep(); err != nil {
		t.Fatalf("Sweep() = %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace %s still exists after Sweep (stat: %v)", name, err)
	}
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		_ = sleeper.Process.Kill()
		t.Errorf("process %d in the leftover namespace still runs after Sweep", sleeper.Process.Pid)
	}
	if pinMade {
		if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("BPF pin %s still exists after Sweep (stat: %v)", pin, err)
		}
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory %s still exists after Sweep (stat: %v)", tmp, err)
	}
}

func TestSweepKeepsLiveRuns(t *testing.T) {
	topo := New(t, Spec{})
	if err := Sweep(); err != nil {
		t.Fatalf("Sweep() = %v", err)
	}
	for _, h := range topo.Hosts() {
		if _, err := os.Stat(netnsDir + "/" + h.Namespace); err != nil {
			t.Errorf("Sweep removed %s of the running test: %v", h.Namespace, err)
		}
	}
}

// TestTopologyInterruptTearsDown runs this test binary again as a helper that
// builds a topology, starts a backend and then waits. The test sends the
// helper SIGINT and checks that its namespaces and backend are gone.
func TestTopologyInterruptTearsDown(t *testing.T) {
	if os.Getenv("TGE_INTERRUPT_HELPER") == "1" {
		topo := New(t, Spec{})
		p, err := topo.StartBackend(0)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("ready %s %d\n", topo.Name, p.PID)
		time.Sleep(60 * time.Second)
		return
	}
	RequireRoot(t)

	cmd := exec.Command(os.Args[0], "-test.run=^TestTopologyInterruptTearsDown$", "-test.v")
	cmd.Env = append(os.Environ(), "TGE_INTERRUPT_HELPER=1", BinaryEnv+"="+Binary(t))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	lines := make(chan string, 64)
	go func() {
		data := make([]byte, 4096)
		var acc string
		for {
			n, err := stdout.Read(data)
			acc += string(data[:n])
			for {
				line, rest, ok := strings.Cut(acc, "\n")
				if !ok {
					break
				}
				lines <- line
				acc = rest
			}
			if err != nil {
				close(lines)
				waited <- cmd.Wait()
				return
			}
		}
	}()

	var name string
	var backendPID int
	deadline := time.After(30 * time.Second)
	var output []string
	for name == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("helper ended before it was ready:\n%s", strings.Join(output, "\n"))
			}
			output = append(output, line)
			if _, err := fmt.Sscanf(line, "ready %s %d", &name, &backendPID); err != nil {
				name = ""
			}
		case <-deadline:
			_ = cmd.Process.Kill()
			t.Fatalf("helper not ready within 30s:\n%s", strings.Join(output, "\n"))
		}
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range lines {
		}
	}()
	select {
	case <-waited:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("helper did not exit within 20s of SIGINT")
	}

	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), name) {
			t.Errorf("namespace %s left behind after SIGINT", e.Name())
		}
	}
	if processAlive(backendPID) && !zombie(backendPID) {
		t.Errorf("backend %d still runs after SIGINT", backendPID)
	}
}

func TestProcessExitReported(t *testing.T) {
	topo := New(t, Spec{})
	h := topo.L7[0]
	bad := topo.Dir + "/bad.yaml"
	if err := os.WriteFile(bad, []byte("l7:\n  listeners: nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := h.Start("l7", Binary(t), "l7", "--config", bad)
	if err != nil {
		t.Fatal(err)
	}
	err = p.WaitReady(AdminPort, 10*time.Second)
	if err == nil {
		t.Fatal("WaitReady() = nil for a process with an invalid config")
	}
	if !strings.Contains(err.Error(), "exited") {
		t.Errorf("WaitReady() = %v, want an error that says the process exited", err)
	}
	if !strings.Contains(p.Output(), "l7.listeners") {
		t.Errorf("output %q does not name the bad key l7.listeners", p.Output())
	}
}

func getEcho(t *testing.T, from *Host, url string) echo.Request {
	t.Helper()
	client := from.HTTPClient(nil)
	defer client.CloseIdleConnections()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s from %s: %v", url, from.Name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body of %s from %s: %v", url, from.Name, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s from %s: status %s, want 200:\n%s", url, from.Name, resp.Status, body)
	}
	var got echo.Request
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("decode echo reply of %s: %v\n%s", url, err, body)
	}
	return got
}

// recordingTB collects Cleanup functions so a test can run them early and
// check what they did. With failed set it reports a failed test and keeps
// what the topology logs.
type recordingTB struct {
	testing.TB
	cleanups []func()
	failed   bool
	logs     []string
}

func (r *recordingTB) Failed() bool { return r.failed || r.TB.Failed() }

func (r *recordingTB) Logf(format string, args ...any) {
	r.logs = append(r.logs, fmt.Sprintf(format, args...))
}

func (r *recordingTB) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }

func (r *recordingTB) runCleanups() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	r.cleanups = nil
}
