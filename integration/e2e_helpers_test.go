//go:build integration && linux

package integration

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidegate/tidegate/integration/topology"
	"github.com/tidegate/tidegate/shared/config"
	"github.com/tidegate/tidegate/shared/echo"
)

// Names on the L7 certificates of the end-to-end tests.
const (
	appName = "app.tidegate.test"
	apiName = "api.tidegate.test"
)

// fallTime is how long the L4 takes at most to mark a dead L7 node down with
// the generated health checks: fall consecutive failures, each after up to
// one interval plus the probe timeout.
var fallTime = time.Duration(topology.CheckFall) * (topology.CheckInterval.D() + topology.CheckTimeout.D())

// dataplaneModes returns the L4 engines that every end-to-end test runs
// with: "userspace", plus "xdp" once the repository has the XDP engine.
func dataplaneModes() []string {
	modes := []string{"userspace"}
	_, file, _, _ := runtime.Caller(0)
	if _, err := os.Stat(filepath.Join(filepath.Dir(file), "..", "l4", "xdp")); err == nil {
		modes = append(modes, "xdp")
	}
	return modes
}

// forEachMode runs fn as a subtest per L4 engine.
func forEachMode(t *testing.T, fn func(t *testing.T, mode string)) {
	for _, mode := range dataplaneModes() {
		t.Run(mode, func(t *testing.T) { fn(t, mode) })
	}
}

// e2e is one chain of real tidegate processes in a fresh topology.
type e2e struct {
	topo  *topology.Topology
	chain *topology.Chain
	mode  string
}

var binaryOnce sync.Once

// startE2E builds a topology for spec and starts backends, L7 nodes and L4
// nodes in it. With pinBackends, L7 node i sends every request to backend
// i alone, so the "backend" field of an echo reply names the L7 node that
// carried the request.
func startE2E(t *testing.T, mode string, spec topology.Spec, pinBackends bool, opts topology.ChainOptions) *e2e {
	t.Helper()
	return startE2EWith(t, mode, spec, func(topo *topology.Topology) topology.ChainOptions {
		if !pinBackends {
			return opts
		}
		if len(topo.Backends) < len(topo.L7) {
			t.Fatalf("pinBackends needs a backend per L7 node, have %d for %d", len(topo.Backends), len(topo.L7))
		}
		configure := opts.L7
		opts.L7 = func(i int, f *config.File) {
			addr := netip.AddrPortFrom(topo.Backends[i].Addr(topology.SegmentBack), topology.BackendHTTPPort)
			f.L7.Upstreams[0].Backends = []config.Backend{{Address: addr.String()}}
			if configure != nil {
				configure(i, f)
			}
		}
		return opts
	})
}

// startE2EWith is [startE2E] for tests that set up something inside the
// topology before the chain starts, such as an in-process backend. prepare
// returns the chain options.
func startE2EWith(t *testing.T, mode string, spec topology.Spec, prepare func(*topology.Topology) topology.ChainOptions) *e2e {
	t.Helper()
	topology.RequireRoot(t)
	// TestMain has built the binary already, so the topology reuses it.
	binaryOnce.Do(func() { os.Setenv(topology.BinaryEnv, tidegateBin) })

	topo := topology.New(t, spec)
	if mode != "userspace" {
		// Frames the L4's program redirects into a veth arrive only when
		// the veth's other end has an XDP program too.
		if err := topo.AttachXDPPass(topo.L4...); err != nil {
			t.Fatal(err)
		}
		// Native XDP on a veth drops transmit checksum offload, so hosts
		// that send through the L4 must fill in their own checksums.
		for _, h := range append(append([]*topology.Host{}, topo.Clients...), topo.L7...) {
			for _, ifc := range h.Interfaces {
				if err := h.DisableTxChecksum(ifc.Segment); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	opts := prepare(topo)
	opts.Mode = mode
	if len(opts.ServerNames) == 0 {
		opts.ServerNames = []string{appName, apiName}
	}
	chain, err := topo.StartChain(opts)
	if err != nil {
		requireTiersBuilt(t, err)
		t.Fatalf("start chain (%s): %v", mode, err)
	}
	return &e2e{topo: topo, chain: chain, mode: mode}
}

// requireTiersBuilt skips the test when err shows that this build lacks
// what the test needs: a tier that is still the placeholder that refuses to
// start ("not built yet"), or configuration keys of a feature whose schema
// has not been merged ("unknown key"). Under CI=true it fails instead,
// because there every end-to-end test must run.
func requireTiersBuilt(t *testing.T, err error) {
	t.Helper()
	var marker string
	for _, m := range []string{"not built yet", "not built into this binary", "unknown key"} {
		if strings.Contains(err.Error(), m) {
			marker = m
			break
		}
	}
	if marker == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true but this build lacks a part the test needs: %v", err)
	}
	t.Skipf("this build lacks a part the test needs: %s", firstLine(err.Error(), marker))
}

func firstLine(s, containing string) string {
	for line := range strings.SplitSeq(s, "\n") {
		if strings.Contains(line, containing) {
			return strings.TrimSpace(line)
		}
	}
	return s
}

// clientOptions configures [e2e.client].
type clientOptions struct {
	keepAlive bool // reuse connections; false opens one per request
	http2     bool // offer h2 in ALPN
}

// client returns an HTTP client on host h whose every connection goes to
// the VIP: port 443 for https URLs, port 80 otherwise. URLs carry the
// server name (for SNI and Host), not an address.
func (e *e2e) client(h *topology.Host, o clientOptions) *http.Client {
	tlsConfig := &tls.Config{RootCAs: e.chain.CA.Pool, NextProtos: []string{"http/1.1"}}
	if o.http2 {
		tlsConfig.NextProtos = []string{"h2", "http/1.1"}
	}
	tr := h.Transport(tlsConfig)
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return h.DialContext(ctx, "tcp", vipAddr(addr))
	}
	tr.ForceAttemptHTTP2 = o.http2
	tr.DisableKeepAlives = !o.keepAlive
	tr.DisableCompression = true
	tr.MaxConnsPerHost = 0
	client := &http.Client{Transport: tr, Timeout: 15 * time.Second}
	return client
}

// vipAddr maps the host:port of a request URL to the VIP with the same
// service port.
func vipAddr(addr string) string {
	port := topology.VIPHTTPPort
	if strings.HasSuffix(addr, ":443") {
		port = topology.VIPHTTPSPort
	}
	return netip.AddrPortFrom(topology.VIP, uint16(port)).String()
}

// fetchEcho sends GET url and decodes the echo backend's reply. It fails the
// test on a transport error or a status other than 200.
func fetchEcho(t *testing.T, c *http.Client, url string) (echo.Request, *http.Response) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %s, want 200:\n%s", url, resp.Status, body)
	}
	var got echo.Request
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("GET %s: decode echo reply: %v\n%s", url, err, body)
	}
	return got, resp
}

// forwardedFor returns the first address of X-Forwarded-For as the backend
// received it.
func forwardedFor(r echo.Request) string {
	v := strings.Join(r.Headers["X-Forwarded-For"], ",")
	first, _, _ := strings.Cut(v, ",")
	return strings.TrimSpace(first)
}

// result is the outcome of one request of a load run.
type result struct {
	worker  int
	start   time.Time
	latency time.Duration
	err     error
	status  int
	backend string
	retried bool
	// firstErr is the error of the first attempt of a retried request.
	firstErr error
}

// loadOptions configures [runLoad]. Every run is bounded by both maxRequests
// and duration.
type loadOptions struct {
	url         string
	clients     []*http.Client // one per worker
	maxRequests int            // per worker
	duration    time.Duration
	pause       time.Duration // between requests of a worker
	// retry repeats a failed request once, as an HTTP client may for an
	// idempotent GET whose connection the server closed.
	retry bool
}

// runLoad sends GET requests from every client in parallel until stop is
// closed, the duration passes or each worker sent maxRequests.
func runLoad(o loadOptions, stop <-chan struct{}) []result {
	var mu sync.Mutex
	var all []result
	var wg sync.WaitGroup
	deadline := time.Now().Add(o.duration)
	for w, c := range o.clients {
		wg.Go(func() {
			for n := 0; n < o.maxRequests && time.Now().Before(deadline); n++ {
				select {
				case <-stop:
					return
				default:
				}
				r := doRequest(c, o.url)
				if r.err != nil && o.retry {
					again := doRequest(c, o.url)
					again.start, again.retried, again.firstErr = r.start, true, r.err
					again.latency = time.Since(r.start)
					r = again
				}
				r.worker = w
				mu.Lock()
				all = append(all, r)
				mu.Unlock()
				if o.pause > 0 {
					time.Sleep(o.pause)
				}
			}
		})
	}
	wg.Wait()
	slices.SortFunc(all, func(a, b result) int { return a.start.Compare(b.start) })
	return all
}

func doRequest(c *http.Client, url string) result {
	r := result{start: time.Now()}
	resp, err := c.Get(url)
	if err != nil {
		r.err = err
		r.latency = time.Since(r.start)
		return r
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	r.latency = time.Since(r.start)
	r.status = resp.StatusCode
	r.backend = resp.Header.Get("X-Backend")
	switch {
	case err != nil:
		r.err = fmt.Errorf("read body: %w", err)
	case resp.StatusCode != http.StatusOK:
		r.err = fmt.Errorf("status %s: %.200s", resp.Status, body)
	}
	return r
}

// loadSummary is what a fault test reports about a load run.
type loadSummary struct {
	sent, failed, retried int
	p50, p99              time.Duration
}

// summarize counts the results that started at or after from and before
// to. A zero from or to leaves that side open.
func summarize(rs []result, from, to time.Time) loadSummary {
	var s loadSummary
	var lat []time.Duration
	for _, r := range rs {
		if r.start.Before(from) || (!to.IsZero() && !r.start.Before(to)) {
			continue
		}
		s.sent++
		if r.err != nil {
			s.failed++
		}
		if r.retried {
			s.retried++
		}
		lat = append(lat, r.latency)
	}
	slices.Sort(lat)
	s.p50 = percentile(lat, 0.50)
	s.p99 = percentile(lat, 0.99)
	return s
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)-1) + 0.5)
	return sorted[i]
}

// logOutcome writes a fault test's measured outcome to the test log.
func logOutcome(t *testing.T, what string, s loadSummary) {
	t.Helper()
	t.Logf("outcome %s: sent=%d failed=%d retried=%d latency p50=%s p99=%s",
		what, s.sent, s.failed, s.retried, s.p50.Round(time.Microsecond), s.p99.Round(time.Microsecond))
}

// firstErrors returns up to n error messages of rs, for failure messages.
func firstErrors(rs []result, n int) string {
	var out []string
	for _, r := range rs {
		if (r.err != nil || r.firstErr != nil) && len(out) < n {
			out = append(out, fmt.Sprintf("worker %d at %s: %v (first attempt: %v)", r.worker, r.start.Format("15:04:05.000"), r.err, r.firstErr))
		}
	}
	return strings.Join(out, "\n")
}

// metricSample matches one sample line of the Prometheus text format.
var metricSample = regexp.MustCompile(`^(tidegate_[a-zA-Z0-9_]+(?:\{[^}]*\})?) ([0-9.eE+-]+)$`)

// scrapeMetrics returns every tidegate_ sample of a process's /metrics.
func scrapeMetrics(t *testing.T, p *topology.Process) map[string]float64 {
	t.Helper()
	c := p.Host.HTTPClient(nil)
	defer c.CloseIdleConnections()
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", topology.AdminPort))
	if err != nil {
		t.Fatalf("scrape metrics of %s on %s: %v", p.Name, p.Host.Name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("scrape metrics of %s on %s: %v", p.Name, p.Host.Name, err)
	}
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(body), "\n") {
		m := metricSample.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err == nil {
			out[m[1]] = v
		}
	}
	return out
}

// increased returns the series of after that grew since before and whose
// name matches re.
func increased(before, after map[string]float64, re *regexp.Regexp) []string {
	var out []string
	for k, v := range after {
		if v > before[k] && re.MatchString(k) {
			out = append(out, fmt.Sprintf("%s +%g", k, v-before[k]))
		}
	}
	slices.Sort(out)
	return out
}

// requireReady checks that every tier process still runs and its /readyz
// returns 200.
func (e *e2e) requireReady(t *testing.T) {
	t.Helper()
	for _, p := range append(append([]*topology.Process{}, e.chain.L4...), e.chain.L7...) {
		if p.Exited() {
			t.Errorf("%s on %s exited: %s", p.Name, p.Host.Name, p.State())
			continue
		}
		if err := p.WaitReady(topology.AdminPort, 5*time.Second); err != nil {
			t.Errorf("%s on %s not ready: %v", p.Name, p.Host.Name, err)
		}
	}
}
