package l7

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newTestSeries() (*seriesCache, *prometheus.CounterVec, *prometheus.HistogramVec) {
	count := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "count"}, []string{"a", "b", "c"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "duration"}, []string{"a", "b"})
	c := &seriesCache{series: func(k seriesKey) requestSeries {
		return requestSeries{count: count.WithLabelValues(k[0], k[1], k[2]), duration: duration.WithLabelValues(k[0], k[1])}
	}}
	return c, count, duration
}

// TestSeriesCacheReturnsVectorChildren checks that cached series are the
// vectors' own children, and that the cache stops at maxCachedSeries.
func TestSeriesCacheReturnsVectorChildren(t *testing.T) {
	c, count, _ := newTestSeries()
	for range 3 {
		c.get(seriesKey{"r", "u", "2xx", ""}).count.Inc()
	}
	if got := testutil.ToFloat64(count.WithLabelValues("r", "u", "2xx")); got != 3 {
		t.Errorf("counter = %v, want 3", got)
	}
	for i := range maxCachedSeries + 10 {
		c.get(seriesKey{fmt.Sprint(i), "u", "2xx", ""}).count.Inc()
	}
	if n := len(*c.m.Load()); n != maxCachedSeries {
		t.Errorf("cache holds %d series, want %d", n, maxCachedSeries)
	}
	if got := testutil.ToFloat64(count.WithLabelValues(fmt.Sprint(maxCachedSeries+5), "u", "2xx")); got != 1 {
		t.Errorf("uncached series counter = %v, want 1", got)
	}
}

// TestSeriesCacheResetDropsDeletedSeries deletes a series from its vector
// and resets the cache, as a reload that removes a backend does, and
// checks that the next request counts in a series the vector exports.
func TestSeriesCacheResetDropsDeletedSeries(t *testing.T) {
	c, count, duration := newTestSeries()
	c.get(seriesKey{"u", "b", "2xx", ""}).count.Inc()
	count.DeletePartialMatch(prometheus.Labels{"a": "u", "b": "b"})
	duration.DeletePartialMatch(prometheus.Labels{"a": "u", "b": "b"})
	c.reset()

	c.get(seriesKey{"u", "b", "2xx", ""}).count.Inc()
	if n := testutil.CollectAndCount(count); n != 1 {
		t.Fatalf("vector exports %d series, want 1", n)
	}
	if got := testutil.ToFloat64(count.WithLabelValues("u", "b", "2xx")); got != 1 {
		t.Errorf("counter after reset = %v, want 1", got)
	}
}

// TestSeriesCacheSkipsStoreAcrossReset resets the cache while a series is
// being made, and checks that the series made before the reset is not
// stored.
func TestSeriesCacheSkipsStoreAcrossReset(t *testing.T) {
	c, _, _ := newTestSeries()
	makeSeries := c.series
	c.series = func(k seriesKey) requestSeries {
		s := makeSeries(k)
		c.reset()
		return s
	}
	c.get(seriesKey{"u", "b", "2xx", ""})
	if m := c.m.Load(); m != nil {
		t.Errorf("cache holds %d series made before a reset, want none", len(*m))
	}
}
