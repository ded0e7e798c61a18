//go:build integration

package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/tidegate/tidegate/l4/proxyheader"
)

// l7Node is an in-test stand-in for an L7 node: a loopback TCP server that
// requires a PROXY header on every connection, records it, and then runs
// handle on the rest of the stream. Connections that close before sending a
// header (TCP health checks) are counted apart.
type l7Node struct {
	t      *testing.T
	addr   string
	handle func(c *net.TCPConn, r *bufio.Reader)

	mu        sync.Mutex
	ln        net.Listener
	conns     map[net.Conn]struct{}
	headers   []*proxyproto.Header
	badHeader int
	wg        sync.WaitGroup
}

// startL7Node starts a node on addr ("127.0.0.1:0" for any port).
func startL7Node(t *testing.T, addr string, handle func(c *net.TCPConn, r *bufio.Reader)) *l7Node {
	t.Helper()
	n := &l7Node{t: t, handle: handle, conns: map[net.Conn]struct{}{}}
	if err := n.listen(addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.kill)
	return n
}

func (n *l7Node) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.ln = ln
	n.addr = ln.Addr().String()
	n.mu.Unlock()
	n.wg.Add(1)
	go n.acceptLoop(ln)
	return nil
}

func (n *l7Node) acceptLoop(ln net.Listener) {
	defer n.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		n.mu.Lock()
		n.conns[c] = struct{}{}
		n.mu.Unlock()
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			defer func() {
				c.Close()
				n.mu.Lock()
				delete(n.conns, c)
				n.mu.Unlock()
			}()
			r := bufio.NewReader(c)
			h, err := proxyproto.ReadTimeout(r, 5*time.Second)
			if err != nil {
				n.mu.Lock()
				n.badHeader++
				n.mu.Unlock()
				return
			}
			n.mu.Lock()
			n.headers = append(n.headers, h)
			n.mu.Unlock()
			n.handle(c.(*net.TCPConn), r)
		}()
	}
}

// kill closes the listener and every open connection, as a crashed process
// would, and waits for the handlers to return.
func (n *l7Node) kill() {
	n.mu.Lock()
	if n.ln != nil {
		n.ln.Close()
		n.ln = nil
	}
	for c := range n.conns {
		_ = c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	n.mu.Unlock()
	n.wg.Wait()
}

// restart listens again on the node's address.
func (n *l7Node) restart(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := n.listen(n.addr)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("relisten on %s: %v", n.addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// headerCount returns how many PROXY headers the node has received.
func (n *l7Node) headerCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.headers)
}

// headerFrom returns the header whose source is client, or nil.
func (n *l7Node) headerFrom(client string) *proxyproto.Header {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, h := range n.headers {
		if h.SourceAddr != nil && h.SourceAddr.String() == client {
			return h
		}
	}
	return nil
}

// echoHandler copies the stream back and passes the client's FIN on.
func echoHandler(c *net.TCPConn, r *bufio.Reader) {
	_, _ = io.Copy(c, r)
	_ = c.CloseWrite()
}

// l4Process runs the tidegate binary as an L4 with the YAML in cfg, which
// uses {{ADMIN}} for the admin address, and waits until it is ready.
type l4Process struct {
	*proc
	admin  string
	config string
}

func startL4(t *testing.T, cfg string, extraArgs ...string) *l4Process {
	t.Helper()
	admin := freeAddr(t)
	path := writeFile(t, t.TempDir(), "l4.yaml", strings.ReplaceAll(cfg, "{{ADMIN}}", admin))
	args := append([]string{"l4", "--config", path}, extraArgs...)
	p := startTidegate(t, "tidegate l4", args...)
	waitReady(t, admin)
	return &l4Process{proc: p, admin: admin, config: path}
}

// vipJSON is the part of GET /vips the tests read.
type vipJSON struct {
	Name  string `json:"name"`
	Reals []struct {
		Address string `json:"address"`
		Weight  int    `json:"weight"`
		Healthy bool   `json:"healthy"`
	} `json:"reals"`
}

func (p *l4Process) vips(t *testing.T) []vipJSON {
	t.Helper()
	resp, err := http.Get("http://" + p.admin + "/vips")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []vipJSON
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("decode /vips: %v", err)
	}
	return out
}

// realHealthy reports the health of one real from GET /vips.
func (p *l4Process) realHealthy(t *testing.T, vip, real string) bool {
	t.Helper()
	for _, v := range p.vips(t) {
		for _, r := range v.Reals {
			if v.Name == vip && r.Address == real {
				return r.Healthy
			}
		}
	}
	t.Fatalf("real %s of vip %s not in /vips", real, vip)
	return false
}

// setWeight calls the admin weight endpoint and returns the status code.
func (p *l4Process) setWeight(t *testing.T, vip, real string, weight int) int {
	t.Helper()
	url := fmt.Sprintf("http://%s/vips/%s/reals/%s/weight", p.admin, vip, real)
	resp, err := http.Post(url, "application/json", strings.NewReader(fmt.Sprintf(`{"weight": %d}`, weight)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// metric returns the value of one series from GET /metrics, or 0 when the
// series is absent. series is written as Prometheus prints it, with labels
// in alphabetical order.
func (p *l4Process) metric(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range bytes.Split(body, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte(series+" ")); ok {
			v, err := strconv.ParseFloat(string(rest), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return v
		}
	}
	return 0
}

// waitUntil polls cond every 20ms until it holds or within passes.
func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen within %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// echoConn is a client connection through the L4 to an echo node.
type echoConn struct {
	*net.TCPConn
	r *bufio.Reader
}

func dialEcho(t *testing.T, vip string) *echoConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", vip, 5*time.Second)
	if err != nil {
		t.Fatalf("dial vip %s: %v", vip, err)
	}
	t.Cleanup(func() { c.Close() })
	return &echoConn{TCPConn: c.(*net.TCPConn), r: bufio.NewReader(c)}
}

// roundTrip sends one line and checks that it comes back.
func (c *echoConn) roundTrip(msg string) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return err
	}
	got, err := c.r.ReadString('\n')
	if err != nil {
		return err
	}
	if got != msg+"\n" {
		return fmt.Errorf("echo = %q, want %q", got, msg+"\n")
	}
	return nil
}

// nodeOf returns the node whose header came from this client connection.
func nodeOf(c *echoConn, nodes []*l7Node) int {
	for i, n := range nodes {
		if n.headerFrom(c.LocalAddr().String()) != nil {
			return i
		}
	}
	return -1
}

// checkHeader verifies the PROXY v2 header a node got for client c.
func checkHeader(t *testing.T, h *proxyproto.Header, client, vip string) proxyheader.ID {
	t.Helper()
	if h.Version != 2 {
		t.Errorf("header version = %d, want 2", h.Version)
	}
	if h.SourceAddr.String() != client {
		t.Errorf("header source = %s, want client %s", h.SourceAddr, client)
	}
	if h.DestinationAddr.String() != vip {
		t.Errorf("header destination = %s, want VIP %s", h.DestinationAddr, vip)
	}
	id, ok := proxyheader.UniqueID(h)
	if !ok {
		t.Errorf("header from %s has no UNIQUE_ID TLV", client)
	}
	return id
}

func execCommand(name string, args ...string) *exec.Cmd { return exec.Command(name, args...) }
