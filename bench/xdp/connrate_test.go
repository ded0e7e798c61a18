//go:build benchxdp && linux

// Package xdp measures the L4's XDP engine against its userspace engine on
// the network namespaces of integration/topology. Run it as root:
//
//	go test -tags benchxdp -run TestConnRate -v -timeout 10m ./bench/xdp/
package xdp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/tidegate/tidegate/integration/topology"
	"github.com/tidegate/tidegate/shared/config"
)

func TestMain(m *testing.M) { os.Exit(topology.Main(m)) }

// Request and response of one connection. The stand-in L7 writes the
// response only after a PROXY header whose source is the client.
var (
	request  = []byte("ping")
	response = []byte("pong")
)

// envInt returns the integer in the environment variable key, or def.
func envInt(t *testing.T, key string, def int) int {
	s := os.Getenv(key)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", key, s)
	}
	return n
}

// envDuration returns the duration in the environment variable key, or def.
func envDuration(t *testing.T, key string, def time.Duration) time.Duration {
	s := os.Getenv(key)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration such as 5s", key, s)
	}
	return d
}

// TestConnRate measures, for each L4 engine, the new connections per second
// that a fixed number of client goroutines complete through the VIP, and the
// CPU time per connection. Each connection sends 4 bytes, reads 4 bytes and
// closes. Tunables: XDPBENCH_CONNS (goroutines, 32),
// XDPBENCH_DURATION (5s), XDPBENCH_WARMUP (1s), XDPBENCH_ROUNDS (3).
func TestConnRate(t *testing.T) {
	topology.RequireRoot(t)
	workers := envInt(t, "XDPBENCH_CONNS", 32)
	duration := envDuration(t, "XDPBENCH_DURATION", 5*time.Second)
	warmup := envDuration(t, "XDPBENCH_WARMUP", time.Second)
	rounds := envInt(t, "XDPBENCH_ROUNDS", 3)

	for _, mode := range []string{"userspace", "xdp"} {
		t.Run(mode, func(t *testing.T) {
			env := startEnv(t, mode)
			for round := 1; round <= rounds; round++ {
				runLoad(t, env, workers, warmup)
				r := measure(t, env, workers, duration)
				t.Logf("RESULT mode=%s round=%d conns=%d errors=%d conn_per_s=%.0f "+
					"l4_proc_us_per_conn=%.2f softirq_us_per_conn=%.2f all_cpu_us_per_conn=%.2f",
					mode, round, r.conns, r.errors, r.rate(),
					r.perConn(r.procTicks), r.perConn(r.softirqTicks), r.perConn(r.busyTicks))
				if r.conns == 0 {
					t.Fatalf("%s round %d: no connection completed (%d errors)", mode, round, r.errors)
				}
			}
			t.Logf("stand-in l7 nodes: %d connections served, %d failed", env.served.Load(), env.standInErrors.Load())
			if mode == "xdp" {
				logXDPStats(t, env)
			}
		})
	}
}

// benchEnv is one topology with an L4 node in one mode and two stand-in L7
// nodes.
type benchEnv struct {
	topo   *topology.Topology
	l4     *topology.Process
	client *topology.Host
	vip    string
	// Connections the stand-in L7 nodes completed, and those that failed
	// after the PROXY header for another reason than the client leaving.
	served, standInErrors atomic.Int64
}

// startEnv builds the topology and starts the stand-in L7 nodes and the real
// tidegate L4 in mode.
func startEnv(t *testing.T, mode string) *benchEnv {
	topo := topology.New(t, topology.Spec{Clients: 1, L4Nodes: 1, L7Nodes: 2, Backends: 1})
	env := &benchEnv{
		topo:   topo,
		client: topo.Clients[0],
		vip:    netip.AddrPortFrom(topology.VIP, topology.VIPHTTPPort).String(),
	}
	// The client, and the userspace L4 towards the L7 nodes, open tens of
	// thousands of connections per round and close first. Without
	// tcp_tw_reuse=1 (the default 2 covers loopback only) TIME_WAIT fills
	// the ephemeral port range within a round.
	for _, h := range []*topology.Host{env.client, topo.L4[0]} {
		if err := h.SetSysctl("net/ipv4/tcp_tw_reuse", "1"); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range topo.L7 {
		startStandIn(t, env, h)
	}

	f := topology.L4File(mode, topo.L7Addrs())
	if mode == "xdp" {
		prepareXDP(t, topo, f)
	}
	p, err := topo.StartL4(0, f)
	if err != nil {
		t.Fatalf("start l4 (%s): %v", mode, err)
	}
	env.l4 = p

	// The health checks need CheckRise passes before the L4 sends
	// connections to an L7 node, so wait for one exchange to succeed.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := exchange(context.Background(), env)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection through the VIP %s (%s): %v\nl4 log:\n%s", env.vip, mode, err, p.Tail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return env
}

// prepareXDP sets the XDP keys of f the way topology.StartChain does, and
// sets up the veth peers and checksums that native XDP on veth needs.
func prepareXDP(t *testing.T, topo *topology.Topology, f *config.File) {
	h := topo.L4[0]
	d := &f.L4.Dataplane
	for _, ifc := range h.Interfaces {
		d.Interfaces = append(d.Interfaces, ifc.Name)
	}
	d.SNATAddress = h.Addr(topology.SegmentMid).String()
	pins, err := topo.PinDir(h.Name)
	if err != nil {
		t.Fatal(err)
	}
	d.PinPath = pins
	// The default range (10000 ports) with the default closing timeout
	// of 10 s would cap the rate at about 1000 connections per second.
	// The L4 namespace's ephemeral ports start at 32768.
	d.SNATPortMin = 1024
	d.SNATPortMax = 32767
	d.ClosingTimeout = config.Duration(time.Second)
	// Closed flows stay in the table until they expire, and the default
	// of 65536 connections filled up in the first round.
	d.FlowTableSize = 262144

	// Frames the program redirects into a veth arrive only when the peer
	// has an XDP program, and native XDP on veth drops transmit checksum
	// offload, so senders fill in their own checksums.
	if err := topo.AttachXDPPass(topo.L4...); err != nil {
		t.Fatal(err)
	}
	for _, host := range append([]*topology.Host{topo.Clients[0]}, topo.L7...) {
		for _, ifc := range host.Interfaces {
			if err := host.DisableTxChecksum(ifc.Segment); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// startStandIn runs a small L7 stand-in in h's namespace. It serves /readyz
// on the admin port for the L4's health checks. On the cleartext port it
// reads the PROXY header and the request, writes the response and waits for
// the client to close, so TIME_WAIT stays on the connecting side.
func startStandIn(t *testing.T, env *benchEnv, h *topology.Host) {
	admin, err := h.Listen("tcp", fmt.Sprintf(":%d", topology.AdminPort))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ready\n") })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: time.Second}
	go srv.Serve(admin)
	t.Cleanup(func() { srv.Close() })

	ln, err := h.Listen("tcp", fmt.Sprintf(":%d", topology.L7HTTPPort))
	if err != nil {
		t.Fatal(err)
	}
	clientAddr := env.client.Addr(topology.SegmentFront)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := serveStandIn(conn, clientAddr)
				switch {
				case err == nil:
					env.served.Add(1)
				case errors.Is(err, errWrongClient):
					t.Errorf("stand-in l7 %s: %v", h.Name, err)
				case !errors.Is(err, errClientGone):
					// Resets and timeouts also show up as failed
					// connections on the client, which the result counts.
					if env.standInErrors.Add(1) == 1 {
						t.Logf("first stand-in l7 error (%s): %v", h.Name, err)
					}
				}
			}()
		}
	}()
}

// errClientGone is a connection closed before its request, which happens to
// the connections in flight when a round ends.
var errClientGone = errors.New("closed before the request")

// errWrongClient is a PROXY header that does not name the client, which
// fails the test because the L4 then measured something else.
var errWrongClient = errors.New("proxy header does not name the client")

// serveStandIn handles one connection from the L4 and checks that its PROXY
// header names the client.
func serveStandIn(conn net.Conn, client netip.Addr) error {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	hdr, err := proxyproto.Read(r)
	if err != nil {
		return fmt.Errorf("read proxy header: %w", err)
	}
	src, ok := hdr.SourceAddr.(*net.TCPAddr)
	if !ok || src.AddrPort().Addr().Unmap() != client {
		return fmt.Errorf("%w: source %v, want %s", errWrongClient, hdr.SourceAddr, client)
	}
	buf := make([]byte, len(request))
	_, err = io.ReadFull(r, buf)
	if errors.Is(err, io.EOF) {
		return errClientGone
	}
	if err != nil {
		return fmt.Errorf("read request: %w", err)
	}
	if _, err := conn.Write(response); err != nil {
		return fmt.Errorf("write response: %w", err)
	}
	if n, err := r.Read(buf); !errors.Is(err, io.EOF) {
		return fmt.Errorf("read after response: got %d bytes, %v; want EOF", n, err)
	}
	return nil
}

// exchange opens one connection to the VIP, sends the request, reads the
// response and closes.
func exchange(ctx context.Context, env *benchEnv) error {
	dialCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := env.client.DialContext(dialCtx, "tcp", env.vip)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := conn.Write(request); err != nil {
		return fmt.Errorf("write request: %w", err)
	}
	buf := make([]byte, len(response))
	n, err := io.ReadFull(conn, buf)
	if err != nil || string(buf) != string(response) {
		return fmt.Errorf("read response: got %q, %v; want %q", buf[:n], err, response)
	}
	return nil
}

// runLoad runs workers goroutines that each repeat exchange until d has
// passed, and returns the completed and failed connections.
func runLoad(t *testing.T, env *benchEnv, workers int, d time.Duration) (int64, int64) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				err := exchange(ctx, env)
				switch {
				case err == nil:
					ok.Add(1)
				case ctx.Err() != nil:
					// The round ended during this connection.
				default:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		t.Logf("first of %d failed connections: %s", failed.Load(), e)
	}
	return ok.Load(), failed.Load()
}

// result is one measured round.
type result struct {
	conns, errors int64
	elapsed       time.Duration
	// CPU time in clock ticks (USER_HZ): the tidegate l4 process's utime
	// plus stime, the softirq time of all CPUs, and the busy (non-idle,
	// non-iowait) time of all CPUs.
	procTicks, softirqTicks, busyTicks uint64
}

func (r result) rate() float64 { return float64(r.conns) / r.elapsed.Seconds() }

// perConn converts ticks to microseconds per completed connection.
func (r result) perConn(ticks uint64) float64 {
	if r.conns == 0 {
		return 0
	}
	return float64(ticks) * 1e6 / float64(clockTicks) / float64(r.conns)
}

// clockTicks is USER_HZ, the unit of /proc/stat and /proc/PID/stat. It is
// 100 on every Linux architecture that Go supports.
const clockTicks = 100

// measure runs one round and reads the CPU counters around it.
func measure(t *testing.T, env *benchEnv, workers int, d time.Duration) result {
	procBefore := procTicks(t, env.l4.PID)
	softBefore, busyBefore := systemTicks(t)
	start := time.Now()
	conns, failed := runLoad(t, env, workers, d)
	elapsed := time.Since(start)
	procAfter := procTicks(t, env.l4.PID)
	softAfter, busyAfter := systemTicks(t)
	return result{
		conns: conns, errors: failed, elapsed: elapsed,
		procTicks:    procAfter - procBefore,
		softirqTicks: softAfter - softBefore,
		busyTicks:    busyAfter - busyBefore,
	}
}

// procTicks returns utime+stime of pid from /proc/PID/stat. Threads are
// included, exited children are not.
func procTicks(t *testing.T, pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name may contain spaces, so fields are counted after its
	// closing parenthesis. utime and stime are fields 14 and 15.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	utime, err1 := strconv.ParseUint(fields[11], 10, 64)
	stime, err2 := strconv.ParseUint(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("parse /proc/%d/stat: %v", pid, err)
	}
	return utime + stime
}

// systemTicks returns the softirq time and the busy time summed over all
// CPUs from the "cpu" line of /proc/stat. Busy is every column except idle
// and iowait, and guest time, which user already contains.
func systemTicks(t *testing.T) (softirq, busy uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		t.Fatalf("unexpected first line of /proc/stat: %q", line)
	}
	// user nice system idle iowait irq softirq steal
	var v [8]uint64
	for i := range v {
		n, err := strconv.ParseUint(fields[i+1], 10, 64)
		if err != nil {
			t.Fatalf("parse /proc/stat field %d: %v", i+1, err)
		}
		v[i] = n
	}
	return v[6], v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
}

// logXDPStats logs the XDP counters from the L4's metrics, which show that
// the XDP engine and not the userspace fallback carried the connections.
func logXDPStats(t *testing.T, env *benchEnv) {
	client := env.topo.L4[0].HTTPClient(nil)
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", topology.AdminPort))
	if err != nil {
		t.Fatalf("read l4 metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read l4 metrics: %v", err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "tidegate_l4_xdp") && !strings.HasSuffix(line, " 0") {
			t.Log(line)
		}
	}
}
