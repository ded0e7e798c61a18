//go:build integration

package integration

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// The dashboard stack exercises every series the dashboard reads, because
// a labelled Prometheus series is exported only after its first event.
// Its L7 has a TLS listener (handshakes, and a failed one), a PROXY
// listener fed a bad header, an upstream with a dead backend and retries,
// and a cached route (a miss, then hits). Its L4 has a VIP whose only real
// refuses connections.
const dashboardL7Config = `
admin: {address: %q}
shutdown_delay: 0s
drain_timeout: 2s
l7:
  listeners:
    - name: proxied
      address: %q
      proxy_protocol: {trusted: [127.0.0.1/32], timeout: 2s}
    - name: https
      address: %q
      tls:
        certificates: [{cert_file: %q, key_file: %q}]
  cache: {max_size: 16MiB}
  routes:
    - {name: cached, match: {path_prefix: /cached/}, upstream: static, cache: {enabled: true}}
    - {name: all, match: {path_prefix: /}, upstream: echo}
  upstreams:
    - name: echo
      retries: 1
      backends:
        - address: %q
        - address: %q
    - name: static
      backends:
        - address: %q
`

const dashboardL4Config = `
admin: {address: %q}
shutdown_delay: 0s
drain_timeout: 2s
l4:
  vips:
    - name: web
      address: %q
      reals:
        - address: %q
    - name: dead
      address: %q
      reals:
        - address: %q
`

// dashboardQuery is one PromQL expression of the dashboard and where it is.
type dashboardQuery struct {
	where string
	expr  string
}

// loadDashboardQueries returns every PromQL expression in the dashboard:
// panel targets and template variable queries.
func loadDashboardQueries(t *testing.T) []dashboardQuery {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(filepath.Dir(file)), "deploy", "grafana", "tidegate.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Title  string `json:"title"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Errorf("dashboard has uid %q and title %q, want both set for provisioning", dash.UID, dash.Title)
	}

	var out []dashboardQuery
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, target := range p.Targets {
			if strings.TrimSpace(target.Expr) == "" {
				t.Errorf("panel %q has an empty query", p.Title)
			}
			out = append(out, dashboardQuery{where: "panel " + p.Title, expr: target.Expr})
		}
	}
	for _, v := range dash.Templating.List {
		if v.Type == "query" {
			out = append(out, dashboardQuery{where: "variable " + v.Name, expr: v.Definition})
		}
	}
	return out
}

func startDashboardStack(t *testing.T) (l4Admin, l7Admin string) {
	t.Helper()
	dir := t.TempDir()
	backend := freeAddr(t)
	startBackend(t, 0, backend)
	deadBackend, deadReal := freeAddr(t), freeAddr(t)
	static := startCacheableBackend(t)

	certFile, keyFile, pool := selfSignedCert(t, dir, "", "localhost", "127.0.0.1")
	l7Admin, proxied, httpsAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	cfg := writeFile(t, dir, "l7.yaml", fmt.Sprintf(dashboardL7Config, l7Admin, proxied, httpsAddr, certFile, keyFile, backend, deadBackend, static))
	startTidegate(t, "l7", "l7", "--config", cfg)
	waitReady(t, l7Admin)

	l4Admin = freeAddr(t)
	vip, deadVIP := freeAddr(t), freeAddr(t)
	cfg = writeFile(t, dir, "l4.yaml", fmt.Sprintf(dashboardL4Config, l4Admin, vip, proxied, deadVIP, deadReal))
	startTidegate(t, "l4", "l4", "--config", cfg)
	waitReady(t, l4Admin)

	// Requests through the L4: L4 connection and byte series, L7 request
	// and latency series, and retries off the dead backend.
	plain := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	paths := []string{"/cached/logo", "/cached/logo", "/cached/logo"}
	for i := range 10 {
		paths = append(paths, fmt.Sprintf("/d/%d", i))
	}
	for _, path := range paths {
		resp, err := plain.Get("http://" + vip + path)
		if err != nil {
			t.Fatalf("request through the L4: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	// A TLS request for handshakes, then a failed handshake.
	secure := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}, DisableKeepAlives: true}}
	resp, err := secure.Get("https://" + httpsAddr + "/tls")
	if err != nil {
		t.Fatalf("TLS request: %v", err)
	}
	resp.Body.Close()
	sendAndClose(t, httpsAddr, "this is not a TLS client hello\r\n\r\n")

	// A connection from a trusted peer without a PROXY header.
	sendAndClose(t, proxied, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")

	// The dead VIP: its real refuses, so the dial fails and the client
	// connection is rejected.
	if c, err := net.DialTimeout("tcp", deadVIP, 2*time.Second); err == nil {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.Copy(io.Discard, c)
		c.Close()
	}
	return l4Admin, l7Admin
}

func sendAndClose(t *testing.T, addr, payload string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte(payload))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.Copy(io.Discard, c)
}

var (
	metricNamePattern = regexp.MustCompile(`\btidegate_[a-z0-9_]+`)
	byClausePattern   = regexp.MustCompile(`\bby \(([^)]*)\)`)
	matcherPattern    = regexp.MustCompile(`(tidegate_[a-z0-9_]+)\{([^}]*)\}`)
	matcherLabel      = regexp.MustCompile(`([a-z_]+)\s*(=~|!=|!~|=)`)
)

// resolveMetric maps a name used in PromQL to its exported family: the
// name itself, or the histogram whose _bucket, _sum or _count series it is.
func resolveMetric(families map[string]*dto.MetricFamily, name string) *dto.MetricFamily {
	if mf := families[name]; mf != nil {
		return mf
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		if mf := families[base]; mf != nil && mf.GetType() == dto.MetricType_HISTOGRAM {
			return mf
		}
	}
	return nil
}

func familyLabels(mf *dto.MetricFamily) []string {
	var out []string
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			if !slices.Contains(out, lp.GetName()) {
				out = append(out, lp.GetName())
			}
		}
	}
	if mf.GetType() == dto.MetricType_HISTOGRAM {
		out = append(out, "le")
	}
	return out
}

// TestDashboardMetricsExist checks every metric and label name in the
// Grafana dashboard against what the real L4 and L7 binaries export.
func TestDashboardMetricsExist(t *testing.T) {
	queries := loadDashboardQueries(t)
	if len(queries) < 20 {
		t.Fatalf("dashboard has %d queries, want at least 20", len(queries))
	}
	l4Admin, l7Admin := startDashboardStack(t)

	// Counters of the failed TLS handshake and the bad PROXY header are
	// written when the L7 gives up on the connection, so wait for them.
	deadline := time.Now().Add(10 * time.Second)
	families := map[string]*dto.MetricFamily{}
	for {
		families = map[string]*dto.MetricFamily{}
		for _, admin := range []string{l4Admin, l7Admin} {
			for name, mf := range scrape(t, admin) {
				families[name] = mf
			}
		}
		if families["tidegate_l7_tls_handshake_errors_total"] != nil && families["tidegate_l7_proxy_header_errors_total"] != nil &&
			families["tidegate_l4_connections_rejected_total"] != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}

	used := map[string]bool{}
	for _, q := range queries {
		names := metricNamePattern.FindAllString(q.expr, -1)
		if len(names) == 0 {
			t.Errorf("%s: query uses no tidegate metric: %s", q.where, q.expr)
			continue
		}
		var labels []string
		for _, name := range names {
			used[name] = true
			mf := resolveMetric(families, name)
			if mf == nil {
				t.Errorf("%s: metric %s is not exported by either binary", q.where, name)
				continue
			}
			labels = append(labels, familyLabels(mf)...)
		}
		// Prometheus adds instance and job at scrape time.
		labels = append(labels, "instance", "job")
		for _, by := range byClausePattern.FindAllStringSubmatch(q.expr, -1) {
			for _, label := range strings.Split(by[1], ",") {
				label = strings.TrimSpace(label)
				if !slices.Contains(labels, label) {
					t.Errorf("%s: grouping label %q is on none of %v", q.where, label, names)
				}
			}
		}
		for _, m := range matcherPattern.FindAllStringSubmatch(q.expr, -1) {
			mf := resolveMetric(families, m[1])
			if mf == nil {
				continue
			}
			own := append(familyLabels(mf), "instance", "job")
			for _, lm := range matcherLabel.FindAllStringSubmatch(m[2], -1) {
				if !slices.Contains(own, lm[1]) {
					t.Errorf("%s: label %q is not on %s", q.where, lm[1], m[1])
				}
			}
		}
	}
	t.Logf("checked %d dashboard queries over %d metric names", len(queries), len(used))

	// The L7 status page lists the same cache series.
	doc := fetchStatusJSON(t, l7Admin)
	hits := 0.0
	for _, c := range doc.L7.Cache {
		if c.Name == "tidegate_l7_cache_hits_total" && c.Labels["route"] == "cached" {
			hits = c.Value
		}
	}
	if hits != 2 {
		t.Errorf("/status.json cache hits of route cached = %v, want 2 (three requests for one URL)", hits)
	}
}

// startCacheableBackend serves responses that a shared cache may keep for
// a minute.
func startCacheableBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "public, max-age=60")
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, "cacheable "+r.URL.Path+"\n")
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}
