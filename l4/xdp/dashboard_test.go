//go:build linux

package xdp

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	xdpMetricPattern = regexp.MustCompile(`\btidegate_l4_xdp_[a-z0-9_]+`)
	descNamePattern  = regexp.MustCompile(`fqName: "([^"]+)"`)
	descLabelPattern = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
	byLabelsPattern  = regexp.MustCompile(`\bby \(([^)]*)\)`)
	xdpMatcher       = regexp.MustCompile(`(tidegate_l4_xdp_[a-z0-9_]+)\{([^}]*)\}`)
	matcherName      = regexp.MustCompile(`([a-z_]+)\s*(=~|!=|!~|=)`)
)

// collectorLabels returns the label names of every series the XDP
// collector describes, by metric name. The collector needs no loaded
// program to describe its series.
func collectorLabels(t *testing.T) map[string][]string {
	t.Helper()
	ch := make(chan *prometheus.Desc, 32)
	go func() {
		newCollector(nil).Describe(ch)
		close(ch)
	}()
	out := map[string][]string{}
	for d := range ch {
		s := d.String()
		name := descNamePattern.FindStringSubmatch(s)
		if name == nil {
			t.Fatalf("no metric name in %s", s)
		}
		var labels []string
		if m := descLabelPattern.FindStringSubmatch(s); m != nil {
			for _, l := range strings.Split(m[1], ",") {
				if l = strings.TrimSpace(l); l != "" {
					labels = append(labels, l)
				}
			}
		}
		out[name[1]] = labels
	}
	return out
}

// dashboardExprs returns the PromQL of every panel target in the Grafana
// dashboard.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "tidegate.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("parse dashboard: %v", err)
	}
	var out []string
	for _, p := range dash.Panels {
		for _, target := range p.Targets {
			out = append(out, target.Expr)
		}
	}
	return out
}

// TestDashboardXDPMetrics checks the XDP metric and label names in the
// Grafana dashboard against the XDP collector, because only an L4 running
// the XDP engine exports them, so the integration test of the dashboard
// cannot scrape them.
func TestDashboardXDPMetrics(t *testing.T) {
	described := collectorLabels(t)
	if _, ok := described["tidegate_l4_xdp_packets_total"]; !ok {
		t.Fatalf("collector descriptions %v lack tidegate_l4_xdp_packets_total, so the parsing is wrong", described)
	}

	used := 0
	for _, expr := range dashboardExprs(t) {
		names := xdpMetricPattern.FindAllString(expr, -1)
		if len(names) == 0 {
			continue
		}
		// Prometheus adds instance and job at scrape time.
		labels := []string{"instance", "job"}
		for _, name := range names {
			used++
			own, ok := described[name]
			if !ok {
				t.Errorf("query %s: metric %s is not described by the XDP collector", expr, name)
				continue
			}
			labels = append(labels, own...)
		}
		for _, by := range byLabelsPattern.FindAllStringSubmatch(expr, -1) {
			for _, label := range strings.Split(by[1], ",") {
				if label = strings.TrimSpace(label); !slices.Contains(labels, label) {
					t.Errorf("query %s: grouping label %q is on none of %v", expr, label, names)
				}
			}
		}
		for _, m := range xdpMatcher.FindAllStringSubmatch(expr, -1) {
			own := append([]string{"instance", "job"}, described[m[1]]...)
			for _, lm := range matcherName.FindAllStringSubmatch(m[2], -1) {
				if !slices.Contains(own, lm[1]) {
					t.Errorf("query %s: label %q is not on %s", expr, lm[1], m[1])
				}
			}
		}
	}
	if used == 0 {
		t.Error("dashboard uses no XDP metric, want the XDP versus userspace share panel")
	}
}
