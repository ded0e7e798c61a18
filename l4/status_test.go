package l4

import (
	"fmt"
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tidegate/tidegate/l4/userspace"
	"github.com/tidegate/tidegate/shared/config"
	"github.com/tidegate/tidegate/shared/status"
)

func TestRealState(t *testing.T) {
	tests := []struct {
		healthy bool
		weight  int
		want    string
	}{
		{true, 1, status.StateUp},
		{true, 0, status.StateDraining},
		{false, 1, status.StateDown},
		{false, 0, status.StateDown}, // down wins over drained
	}
	for _, tc := range tests {
		if got := realState(tc.healthy, tc.weight); got != tc.want {
			t.Errorf("realState(healthy=%v, weight=%d) = %q, want %q", tc.healthy, tc.weight, got, tc.want)
		}
	}
}

func TestStatusCollectorStates(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go acceptAll(ln)
	up := ln.Addr().String()

	doc := fmt.Sprintf(`
l4:
  vips:
    - name: web
      address: 127.0.0.1:0
      health_check: {type: tcp, interval: 20ms, timeout: 10ms, rise: 1, fall: 1}
      reals:
        - address: %s
        - address: 127.0.0.1:1
        - {address: %s, weight: 3, health_address: %s}
`, up, "127.0.0.3:8080", up)
	f, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	b, err := NewBalancer(f.L4, discardLogger(), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	// The engine registers the connection series the collector reads.
	if _, err := userspace.New(discardLogger(), reg); err != nil {
		t.Fatal(err)
	}
	b.Start()
	v := b.VIP("web")
	waitFor(t, "127.0.0.1:1 marked down", func() bool { return !v.Reals()[1].Healthy() })
	if err := v.SetWeight("127.0.0.3:8080", 0); err != nil {
		t.Fatal(err)
	}

	c := &statusCollector{balancer: b, engine: func() string { return "userspace" }, sampler: status.NewSampler(reg)}
	d, err := c.collect()
	if err != nil {
		t.Fatal(err)
	}
	if d.Tier != "l4" || d.L4 == nil || d.L7 != nil {
		t.Fatalf("document tier %q with l4=%v l7=%v, want an L4 document", d.Tier, d.L4 != nil, d.L7 != nil)
	}
	if len(d.L4.VIPs) != 1 {
		t.Fatalf("got %d VIPs, want 1", len(d.L4.VIPs))
	}
	vs := d.L4.VIPs[0]
	if vs.Engine != "userspace" {
		t.Errorf("engine %q, want userspace", vs.Engine)
	}
	if vs.UsableReals != 1 {
		t.Errorf("usable reals %d, want 1", vs.UsableReals)
	}
	want := []struct {
		addr         string
		state        string
		weight       int
		configWeight int
	}{
		{up, status.StateUp, 1, 1},
		{"127.0.0.1:1", status.StateDown, 1, 1},
		{"127.0.0.3:8080", status.StateDraining, 0, 3},
	}
	if len(vs.Reals) != len(want) {
		t.Fatalf("got %d reals, want %d", len(vs.Reals), len(want))
	}
	for i, w := range want {
		r := vs.Reals[i]
		if r.Address != w.addr {
			t.Errorf("real %d address %q, want %q", i, r.Address, w.addr)
		}
		if r.State != w.state {
			t.Errorf("real %s state %q, want %q", r.Address, r.State, w.state)
		}
		if r.Weight != w.weight || r.ConfigWeight != w.configWeight {
			t.Errorf("real %s weight %d (config %d), want %d (config %d)", r.Address, r.Weight, r.ConfigWeight, w.weight, w.configWeight)
		}
		if r.ConnectionRate != nil {
			t.Errorf("real %s has a rate on the first sample", r.Address)
		}
	}
	if vs.Reals[1].LastError == "" {
		t.Errorf("down real has no last error")
	}
	if got := d.Problems(); len(got) != 1 || got[0].Address != "127.0.0.1:1" {
		t.Errorf("problems = %+v, want only 127.0.0.1:1", got)
	}

	// A second collection has a base, so rates are present (and zero).
	d, err = c.collect()
	if err != nil {
		t.Fatal(err)
	}
	if r := d.L4.VIPs[0].Reals[0]; r.ConnectionRate == nil || *r.ConnectionRate != 0 {
		t.Errorf("second collection: connection rate %v, want 0", r.ConnectionRate)
	}
}

// BenchmarkStatusCollect measures one /status.json collection for 20 VIPs
// of 10 reals each, with every engine series present.
func BenchmarkStatusCollect(b *testing.B) {
	doc := "l4:\n  vips:\n"
	for v := range 20 {
		doc += fmt.Sprintf("    - name: vip%d\n      address: 127.0.0.1:%d\n      reals:\n", v, 10000+v)
		for r := range 10 {
			doc += fmt.Sprintf("        - address: 127.0.%d.%d:8080\n", v, r+1)
		}
	}
	f, err := config.Parse([]byte(doc))
	if err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	bal, err := NewBalancer(f.L4, discardLogger(), reg)
	if err != nil {
		b.Fatal(err)
	}
	// Stand-ins for the engine's series, with the same names and labels,
	// so the collection reads 200 reals' worth of counters.
	conns := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tidegate_l4_real_connections_total", Help: "h"}, []string{"vip", "real"})
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tidegate_l4_bytes_total", Help: "h"}, []string{"vip", "real", "direction"})
	reg.MustRegister(conns, bytes)
	for _, v := range bal.VIPs() {
		for _, r := range v.Reals() {
			conns.WithLabelValues(v.Name, r.Address).Add(100)
			bytes.WithLabelValues(v.Name, r.Address, "client_to_real").Add(1e6)
			bytes.WithLabelValues(v.Name, r.Address, "real_to_client").Add(1e7)
		}
	}
	c := &statusCollector{balancer: bal, engine: func() string { return "userspace" }, sampler: status.NewSampler(reg)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.collect(); err != nil {
			b.Fatal(err)
		}
	}
}
