package l7

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tidegate/tidegate/l7/upstream"
)

// backendMetrics count requests per backend, for the status page and for
// dashboards that need to tell a slow or failing backend from its pool.
type backendMetrics struct {
	responses *prometheus.CounterVec   // upstream, backend, status_class
	duration  *prometheus.HistogramVec // upstream, backend
	series    seriesCache              // by upstream, backend and status class
}

func newBackendMetrics(reg prometheus.Registerer) *backendMetrics {
	m := &backendMetrics{
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidegate_l7_backend_requests_total",
			Help: "Requests by the backend that served them (the last one tried) and status class.",
		}, []string{"upstream", "backend", "status_class"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tidegate_l7_backend_request_duration_seconds",
			Help:    "Time from request headers read to response complete, by the backend that served the request.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"upstream", "backend"}),
	}
	reg.MustRegister(m.responses, m.duration)
	// The key is upstream, backend and status class.
	m.series.series = func(k seriesKey) requestSeries {
		return requestSeries{
			count:    m.responses.WithLabelValues(k[0], k[1], k[2]),
			duration: m.duration.WithLabelValues(k[0], k[1]),
		}
	}
	return m
}

func (m *backendMetrics) observe(upstream, backend string, status int, elapsed time.Duration) {
	s := m.series.get(seriesKey{upstream, backend, statusClass(status), ""})
	s.count.Inc()
	s.duration.Observe(elapsed.Seconds())
}

// forget deletes the series of backends that are in prev but not in next,
// so a reload that removes a backend also removes its series.
// NOTE: a request still in flight on a removed backend when the reload
// runs creates its series again when it finishes.
func (m *backendMetrics) forget(prev, next *state) {
	if prev == nil {
		return
	}
	deleted := false
	for name, oldPool := range prev.pools {
		newPool := next.pools[name]
		for _, b := range oldPool.Backends() {
			if newPool != nil && hasBackend(newPool.Backends(), b.Addr) {
				continue
			}
			labels := prometheus.Labels{"upstream": name, "backend": b.Addr}
			m.responses.DeletePartialMatch(labels)
			m.duration.DeletePartialMatch(labels)
			deleted = true
		}
	}
	if deleted {
		m.series.reset()
	}
}

func hasBackend(list []*upstream.Backend, addr string) bool {
	for _, b := range list {
		if b.Addr == addr {
			return true
		}
	}
	return false
}
