package l7

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tidegate/tidegate/l7/upstream"
	"github.com/tidegate/tidegate/shared/admin"
	"github.com/tidegate/tidegate/shared/config"
	"github.com/tidegate/tidegate/shared/status"
)

func TestDescribeMatch(t *testing.T) {
	tests := []struct {
		match config.RouteMatch
		want  string
	}{
		{config.RouteMatch{}, "any request"},
		{config.RouteMatch{PathPrefix: "/api"}, "prefix /api"},
		{config.RouteMatch{Path: "/x", PathPrefix: "/ignored"}, "path /x"},
		{config.RouteMatch{PathRegex: "^/v[0-9]+/"}, "regex ^/v[0-9]+/"},
		{
			config.RouteMatch{Hosts: []string{"a.example", "*.b.example"}, Methods: []string{"GET", "HEAD"},
				Headers: map[string]string{"X-B": "2", "X-A": "1"}},
			"host a.example,*.b.example method GET,HEAD header X-A=1 header X-B=2",
		},
	}
	for _, tc := range tests {
		if got := describeMatch(tc.match); got != tc.want {
			t.Errorf("describeMatch(%+v) = %q, want %q", tc.match, got, tc.want)
		}
	}
}

func TestBackendState(t *testing.T) {
	tests := []struct {
		stats  upstream.Stats
		weight int
		want   string
	}{
		{upstream.Stats{Healthy: true}, 1, status.StateUp},
		{upstream.Stats{Healthy: false}, 1, status.StateDown},
		{upstream.Stats{Healthy: false, Ejected: true}, 1, status.StateDown},
		{upstream.Stats{Healthy: true, Ejected: true}, 1, status.StateEjected},
		{upstream.Stats{Healthy: true}, 0, status.StateDraining},
	}
	for _, tc := range tests {
		if got := backendState(tc.stats, tc.weight); got != tc.want {
			t.Errorf("backendState(%+v, weight %d) = %q, want %q", tc.stats, tc.weight, got, tc.want)
		}
	}
}

func TestStatusJSONServed(t *testing.T) {
	doc := `
l7:
  listeners:
    - {name: web, address: 127.0.0.1:0}
  routes:
    - {name: api, match: {path_prefix: /api}, upstream: pool}
  upstreams:
    - name: pool
      balance: least_request
      backends:
        - address: 127.0.0.1:1
        - {address: 127.0.0.1:2, weight: 0}
`
	f, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	adm := admin.New("", false, logger)
	s, err := New(f, logger, adm)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.state.Load().close(nil) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if err := adm.Listen(addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = adm.Shutdown(t.Context()) })

	resp, err := http.Get(fmt.Sprintf("http://%s/status.json", addr))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /status.json: %s: %s", resp.Status, body)
	}
	d, err := status.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	l7 := d.L7
	if l7 == nil {
		t.Fatalf("document has no l7 section: %s", body)
	}
	if len(l7.Listeners) != 1 || l7.Listeners[0].Name != "web" || l7.Listeners[0].TLS {
		t.Errorf("listeners = %+v, want one plain listener web", l7.Listeners)
	}
	if len(l7.Routes) != 1 || l7.Routes[0].Match != "prefix /api" || l7.Routes[0].Upstream != "pool" {
		t.Errorf("routes = %+v, want api on pool matching prefix /api", l7.Routes)
	}
	if len(l7.Upstreams) != 1 {
		t.Fatalf("upstreams = %+v, want one", l7.Upstreams)
	}
	u := l7.Upstreams[0]
	if u.Balance != "least_request" {
		t.Errorf("balance %q, want least_request", u.Balance)
	}
	if len(u.Backends) != 2 {
		t.Fatalf("backends = %+v, want two", u.Backends)
	}
	if b := u.Backends[0]; b.Address != "127.0.0.1:1" || b.State != status.StateUp || b.Weight != 1 {
		t.Errorf("backend 0 = %+v, want 127.0.0.1:1 up with weight 1", b)
	}
	if b := u.Backends[1]; b.Address != "127.0.0.1:2" || b.State != status.StateDraining {
		t.Errorf("backend 1 = %+v, want 127.0.0.1:2 draining", b)
	}

	page, err := http.Get(fmt.Sprintf("http://%s/status", addr))
	if err != nil {
		t.Fatal(err)
	}
	page.Body.Close()
	if page.StatusCode != http.StatusOK {
		t.Errorf("GET /status: %s", page.Status)
	}
}

func TestCacheAndLimitFigures(t *testing.T) {
	reg := prometheus.NewRegistry()
	hits := prometheus.NewCounterVec(prometheus.CounterOpts{Name: cacheHitsSeries, Help: "h"}, []string{"route"})
	misses := prometheus.NewCounterVec(prometheus.CounterOpts{Name: cacheMissesSeries, Help: "h"}, []string{"route"})
	decisions := prometheus.NewCounterVec(prometheus.CounterOpts{Name: rateLimitDecisions, Help: "h"}, []string{"route", "result"})
	sampler := status.NewSampler(reg)

	empty := status.Window{Cur: status.NewSample(nil, time.Now()), Base: status.NewSample(nil, time.Now().Add(-time.Second))}
	if ratio, limited := cacheAndLimitFigures(empty); ratio != nil || limited != nil {
		t.Errorf("figures without the series = %v, %v, want nil, nil", ratio, limited)
	}

	reg.MustRegister(hits, misses, decisions)
	hits.WithLabelValues("a").Add(1)
	if _, err := sampler.Take(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // rates need the samples apart
	hits.WithLabelValues("a").Add(3)
	hits.WithLabelValues("b").Add(3)
	misses.WithLabelValues("a").Add(2)
	decisions.WithLabelValues("a", "rejected").Add(5)
	decisions.WithLabelValues("a", "allowed").Add(50)
	w, err := sampler.Take()
	if err != nil {
		t.Fatal(err)
	}
	ratio, limited := cacheAndLimitFigures(w)
	if ratio == nil || *ratio != 0.75 {
		t.Errorf("hit ratio = %v, want 0.75 (6 hits, 2 misses in the window)", ratio)
	}
	if limited == nil {
		t.Fatal("rate-limited rate is nil")
	}
	if want := 5 / w.Seconds(); *limited != want {
		t.Errorf("rate-limited rate = %v, want %v", *limited, want)
	}
}
