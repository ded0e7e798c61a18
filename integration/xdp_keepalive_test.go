//go:build integration && linux

package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidegate/tidegate/integration/topology"
)

// keptConn is one keep-alive client connection of
// [TestXDPKeepAliveSurvivesTableChanges] with its own request loop. Unlike
// net/http, the loop never redials, so a lost connection shows as an error.
type keptConn struct {
	local    string
	requests atomic.Int64

	mu      sync.Mutex
	backend string // node of the first response
	moved   string // a later response from another node, if any
	// notOK counts responses other than 200, which come from the L7 when
	// its own health checks time out on a loaded machine. They show that
	// the connection still works, so the loop goes on.
	notOK int
	err   error
	errAt time.Time
}

// run sends GET requests on c until stop is closed or a request fails.
func (k *keptConn) run(c *tls.Conn, stop <-chan struct{}) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		select {
		case <-stop:
			return
		default:
		}
		backend, status, err := keptRoundTrip(c, br)
		k.mu.Lock()
		switch {
		case err != nil:
			k.err, k.errAt = err, time.Now()
		case status != http.StatusOK:
			k.notOK++
		case k.backend == "":
			k.backend = backend
		case backend != k.backend && k.moved == "":
			k.moved = backend
		}
		k.mu.Unlock()
		if err != nil {
			return
		}
		k.requests.Add(1)
		time.Sleep(10 * time.Millisecond)
	}
}

// keptRoundTrip sends one request on c and returns the status and the name
// of the echo backend that served it. An error means the connection failed.
func keptRoundTrip(c *tls.Conn, br *bufio.Reader) (string, int, error) {
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return "", 0, err
	}
	if _, err := io.WriteString(c, "GET /kept HTTP/1.1\r\nHost: "+appName+"\r\n\r\n"); err != nil {
		return "", 0, fmt.Errorf("write request: %w", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", 0, fmt.Errorf("read response: %w", err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", 0, fmt.Errorf("read body: %w", err)
	}
	return resp.Header.Get("X-Backend"), resp.StatusCode, nil
}

func (k *keptConn) state() (backend, moved string, err error, errAt time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.backend, k.moved, k.err, k.errAt
}

func (k *keptConn) notOKCount() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.notOK
}

// TestXDPKeepAliveSurvivesTableChanges holds keep-alive connections through
// the XDP engine to both L7 nodes while the L4 takes node 0 out of the
// Maglev table and puts it back. It does so first with weight 0 through the
// admin API, then twice by killing and restarting the node. Every table
// change rewrites the VIP's maps and neighbour entries. Connections to
// node 1 must keep serving from node 1 throughout, and connections to
// node 0 must survive the drain.
func TestXDPKeepAliveSurvivesTableChanges(t *testing.T) {
	e := startE2E(t, "xdp", topology.Spec{Clients: 2}, true, topology.ChainOptions{})
	l4 := e.chain.L4[0]
	victimBackend, survivorBackend := e.topo.Backends[0].Name, e.topo.Backends[1].Name
	victimReal := netip.AddrPortFrom(e.topo.L7[0].Addr(topology.SegmentMid), topology.L7HTTPSPort).String()

	const n = 24
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() {
		close(stop)
		wg.Wait()
	}()
	conns := make([]*keptConn, n)
	for i := range conns {
		h := e.topo.Clients[i%len(e.topo.Clients)]
		raw, err := h.DialContext(context.Background(), "tcp", vipAddr(appName+":443"))
		if err != nil {
			t.Fatalf("dial the VIP from %s: %v", h.Name, err)
		}
		c := tls.Client(raw, &tls.Config{RootCAs: e.chain.CA.Pool, ServerName: appName, NextProtos: []string{"http/1.1"}})
		k := &keptConn{local: raw.LocalAddr().String()}
		conns[i] = k
		wg.Go(func() { k.run(c, stop) })
	}

	usable := func(want float64) func() bool {
		return func() bool {
			return scrapeMetrics(t, l4)[`tidegate_l4_vip_usable_reals{vip="https"}`] == want
		}
	}
	// progressed waits until every connection whose first response came
	// from one of backends has completed another request.
	progressed := func(what string, backends ...string) {
		t.Helper()
		counts := make([]int64, n)
		for i, k := range conns {
			counts[i] = k.requests.Load()
		}
		waitUntil(t, 10*time.Second, "every kept connection to answer after "+what, func() bool {
			for i, k := range conns {
				b, _, err, _ := k.state()
				for _, want := range backends {
					if b == want && err == nil && k.requests.Load() == counts[i] {
						return false
					}
				}
			}
			return true
		})
	}
	progressed("the start", victimBackend, survivorBackend)
	placed := map[string]int{}
	for _, k := range conns {
		b, _, _, _ := k.state()
		placed[b]++
	}
	if placed[victimBackend] == 0 || placed[survivorBackend] == 0 {
		t.Fatalf("kept connections per node %v: each node needs one, or the test proves nothing", placed)
	}

	xdpDrops := regexp.MustCompile(`^tidegate_l4_xdp_drops_total`)
	xdpPasses := regexp.MustCompile(`^tidegate_l4_xdp_pass_total`)
	before := scrapeMetrics(t, l4)

	// Drain: weight 0 keeps established connections on the node.
	l4Admin := l4.Host.HTTPClient(nil)
	setWeight := func(w int) {
		t.Helper()
		url := fmt.Sprintf("http://127.0.0.1:%d/vips/https/reals/%s/weight", topology.AdminPort, victimReal)
		resp, err := l4Admin.Post(url, "application/json", strings.NewReader(fmt.Sprintf(`{"weight": %d}`, w)))
		if err != nil {
			t.Fatalf("set weight %d of %s: %v", w, victimReal, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("set weight %d of %s: status %s", w, victimReal, resp.Status)
		}
	}
	setWeight(0)
	waitUntil(t, 5*time.Second, "the drained node to leave the table", usable(1))
	progressed("the drain", victimBackend, survivorBackend)
	setWeight(1)
	waitUntil(t, 5*time.Second, "the node to return to the table", usable(2))
	progressed("the return from the drain", victimBackend, survivorBackend)

	// Kill and restart: the health checks take the node out and back.
	victim := e.chain.L7[0]
	var firstKill time.Time
	for cycle := range 2 {
		if cycle == 0 {
			firstKill = time.Now()
		}
		victim.Kill()
		waitUntil(t, 5*time.Second, "the L4 to mark the killed node down", usable(1))
		progressed(fmt.Sprintf("kill %d", cycle+1), survivorBackend)

		p, err := e.topo.StartL7(0, e.chain.L7Files[0], e.chain.L7Patches...)
		if err != nil {
			t.Fatalf("restart %s: %v", e.topo.L7[0].Name, err)
		}
		victim = p
		waitUntil(t, 5*time.Second, "the L4 to mark the restarted node up", usable(2))
		progressed(fmt.Sprintf("restart %d", cycle+1), survivorBackend)
	}

	after := scrapeMetrics(t, l4)
	for _, s := range increased(before, after, xdpDrops) {
		t.Errorf("the XDP program dropped frames while the table changed: %s", s)
	}
	// Passes are expected, because replies to the L4's own health checks
	// and ARP go to the kernel.
	for _, s := range increased(before, after, xdpPasses) {
		t.Logf("XDP passes while the table changed: %s", s)
	}
	for i, k := range conns {
		b, moved, err, errAt := k.state()
		switch {
		case moved != "":
			t.Errorf("connection %d (%s) moved from %s to %s", i, k.local, b, moved)
		case b == survivorBackend && err != nil:
			t.Errorf("connection %d (%s) to %s failed at %s: %v", i, k.local, b, errAt.Format("15:04:05.000"), err)
		case b == victimBackend && err == nil:
			t.Errorf("connection %d (%s) to %s survived the kill of its node", i, k.local, b)
		case b == victimBackend && errAt.Before(firstKill):
			t.Errorf("connection %d (%s) to %s failed at %s, before its node was killed: %v", i, k.local, b, errAt.Format("15:04:05.000"), err)
		}
	}
	notOK := 0
	for _, k := range conns {
		notOK += k.notOKCount()
	}
	if notOK > 0 {
		t.Logf("%d responses on kept connections had a status other than 200", notOK)
	}
	t.Logf("kept connections per node %v; %s drained, then killed and restarted twice", placed, e.topo.L7[0].Name)
}
