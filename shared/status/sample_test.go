package status

import (
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// testRegistry holds one counter vector and one histogram vector.
type testRegistry struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	r := &testRegistry{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "test_requests_total", Help: "requests",
		}, []string{"route", "status_class"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "test_duration_seconds", Help: "latency", Buckets: []float64{0.1, 0.2, 0.4, 0.8},
		}, []string{"upstream"}),
	}
	r.reg.MustRegister(r.requests, r.latency)
	return r
}

// fakeClock is a clock the test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func newTestSampler(r *testRegistry) (*Sampler, *fakeClock) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := NewSampler(r.reg)
	s.now = clock.now
	return s, clock
}

func TestSamplerFirstTakeHasNoRates(t *testing.T) {
	r := newTestRegistry(t)
	r.requests.WithLabelValues("a", "2xx").Add(5)
	s, _ := newTestSampler(r)

	w, err := s.Take()
	if err != nil {
		t.Fatal(err)
	}
	if w.Base != nil {
		t.Fatalf("first window has a base sample")
	}
	if got := w.Rate("test_requests_total", nil); got != nil {
		t.Errorf("rate without base = %v, want nil", *got)
	}
	if got := w.Cur.Sum("test_requests_total", map[string]string{"route": "a"}); got != 5 {
		t.Errorf("current sum = %v, want 5", got)
	}
}

func TestSamplerRateOverWindow(t *testing.T) {
	r := newTestRegistry(t)
	r.requests.WithLabelValues("a", "2xx").Add(10)
	s, clock := newTestSampler(r)
	if _, err := s.Take(); err != nil {
		t.Fatal(err)
	}

	clock.t = clock.t.Add(2 * time.Second)
	r.requests.WithLabelValues("a", "2xx").Add(6)
	r.requests.WithLabelValues("a", "5xx").Add(2) // new series since the base
	w, err := s.Take()
	if err != nil {
		t.Fatal(err)
	}
	if got := w.Seconds(); got != 2 {
		t.Errorf("window = %vs, want 2s", got)
	}
	rate := w.Rate("test_requests_total", map[string]string{"route": "a"})
	if rate == nil {
		t.Fatal("rate is nil with a base sample")
	}
	if *rate != 4 {
		t.Errorf("rate = %v/s, want 4/s ((6+2)/2s)", *rate)
	}
	errs, _ := w.Increase("test_requests_total", map[string]string{"status_class": "5xx"})
	if errs != 2 {
		t.Errorf("5xx increase = %v, want 2", errs)
	}
}

func TestWindowIncreaseAfterReset(t *testing.T) {
	reg := newTestRegistry(t)
	reg.requests.WithLabelValues("a", "2xx").Add(100)
	base := sampleOf(t, reg, 0)

	// A reload rebuilt the series: it restarted from zero and reached 3.
	reg.reg.Unregister(reg.requests)
	fresh := newTestRegistry(t)
	fresh.requests.WithLabelValues("a", "2xx").Add(3)
	cur := sampleOf(t, fresh, time.Second)

	got, ok := Window{Cur: cur, Base: base}.Increase("test_requests_total", nil)
	if !ok {
		t.Fatal("increase not available")
	}
	if got != 3 {
		t.Errorf("increase after reset = %v, want 3", got)
	}
}

func sampleOf(t *testing.T, r *testRegistry, offset time.Duration) *Sample {
	t.Helper()
	families, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return NewSample(families, time.Unix(1000, 0).Add(offset))
}

func TestWindowQuantile(t *testing.T) {
	r := newTestRegistry(t)
	r.latency.WithLabelValues("old").Observe(5) // before the window: must not count
	base := sampleOf(t, r, 0)

	// 100 observations in the window: 50 in (0, 0.1], 40 in (0.1, 0.2],
	// 10 in (0.4, 0.8].
	for range 50 {
		r.latency.WithLabelValues("pool").Observe(0.05)
	}
	for range 40 {
		r.latency.WithLabelValues("pool").Observe(0.15)
	}
	for range 10 {
		r.latency.WithLabelValues("pool").Observe(0.5)
	}
	w := Window{Cur: sampleOf(t, r, time.Second), Base: base}

	cases := []struct {
		q    float64
		want float64
	}{
		{0.5, 0.1},   // rank 50 ends the first bucket
		{0.7, 0.15},  // rank 70: 20 of 40 into (0.1, 0.2]
		{0.95, 0.6},  // rank 95: 5 of 10 into (0.4, 0.8]
		{0.99, 0.76}, // rank 99: 9 of 10 into (0.4, 0.8]
	}
	for _, c := range cases {
		got := w.Quantile(c.q, "test_duration_seconds", map[string]string{"upstream": "pool"})
		if got == nil {
			t.Errorf("q%v = nil, want %v", c.q, c.want)
			continue
		}
		if math.Abs(*got-c.want) > 1e-9 {
			t.Errorf("q%v = %v, want %v", c.q, *got, c.want)
		}
	}
	if got := w.Quantile(0.5, "test_duration_seconds", map[string]string{"upstream": "old"}); got != nil {
		t.Errorf("quantile of a series idle in the window = %v, want nil", *got)
	}
}

func TestWindowQuantileInInfBucket(t *testing.T) {
	r := newTestRegistry(t)
	base := sampleOf(t, r, 0)
	r.latency.WithLabelValues("pool").Observe(30)
	w := Window{Cur: sampleOf(t, r, time.Second), Base: base}

	got := w.Quantile(0.99, "test_duration_seconds", nil)
	if got == nil {
		t.Fatal("quantile is nil")
	}
	if *got != 0.8 {
		t.Errorf("quantile in +Inf bucket = %v, want the highest finite bound 0.8", *got)
	}
}

func TestSamplerKeepsFewSamples(t *testing.T) {
	r := newTestRegistry(t)
	s, clock := newTestSampler(r)
	// 1000 polls 10ms apart, as from many open pages.
	for range 1000 {
		if _, err := s.Take(); err != nil {
			t.Fatal(err)
		}
		clock.t = clock.t.Add(10 * time.Millisecond)
	}
	s.mu.Lock()
	n := len(s.samples)
	s.mu.Unlock()
	// One base at least minWindow old plus one sample per minSpacing.
	if limit := int(minWindow/minSpacing) + 2; n > limit {
		t.Errorf("sampler keeps %d samples, want at most %d", n, limit)
	}
}

func TestSamplerPrefersBaseAtLeastMinWindowOld(t *testing.T) {
	r := newTestRegistry(t)
	s, clock := newTestSampler(r)
	for range 4 { // samples at 0s, 0.5s, 1s, 1.5s
		if _, err := s.Take(); err != nil {
			t.Fatal(err)
		}
		clock.t = clock.t.Add(500 * time.Millisecond)
	}
	w, err := s.Take() // at 2s
	if err != nil {
		t.Fatal(err)
	}
	if got := w.Seconds(); got != 1 {
		t.Errorf("window = %vs, want 1s (the newest sample at least 1s old)", got)
	}
}

func TestSamplerDropsOldSamples(t *testing.T) {
	r := newTestRegistry(t)
	s, clock := newTestSampler(r)
	if _, err := s.Take(); err != nil {
		t.Fatal(err)
	}
	clock.t = clock.t.Add(time.Hour)
	w, err := s.Take()
	if err != nil {
		t.Fatal(err)
	}
	if w.Base != nil {
		t.Errorf("base is %s old, want none after maxAge", w.Cur.Time.Sub(w.Base.Time))
	}
}

func TestCountersRateOnlyForTotals(t *testing.T) {
	reg := prometheus.NewRegistry()
	flows := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_flows_total", Help: "h"}, []string{"reason"})
	entries := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x_entries", Help: "h"})
	reg.MustRegister(flows, entries)
	flows.WithLabelValues("syn").Add(4)
	entries.Set(7)
	s := NewSampler(reg)
	clock := &fakeClock{t: time.Unix(0, 0)}
	s.now = clock.now
	if _, err := s.Take(); err != nil {
		t.Fatal(err)
	}
	clock.t = clock.t.Add(2 * time.Second)
	flows.WithLabelValues("syn").Add(4)
	w, err := s.Take()
	if err != nil {
		t.Fatal(err)
	}

	got := Counters(w, "x_")
	if len(got) != 2 {
		t.Fatalf("got %d counters, want 2: %+v", len(got), got)
	}
	if got[0].Name != "x_entries" || got[0].Rate != nil {
		t.Errorf("gauge = %+v, want x_entries without a rate", got[0])
	}
	if got[1].Name != "x_flows_total" || got[1].Rate == nil || *got[1].Rate != 2 {
		t.Errorf("counter = %+v, want x_flows_total at 2/s", got[1])
	}
	if got[1].Labels["reason"] != "syn" {
		t.Errorf("counter labels = %v, want reason=syn", got[1].Labels)
	}
}
