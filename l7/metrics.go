package l7

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics holds the L7 Prometheus collectors. They live as long as the
// Server, across reloads, so series keep counting.
type metrics struct {
	requests         *prometheus.CounterVec
	duration         *prometheus.HistogramVec
	retries          *prometheus.CounterVec
	connections      *prometheus.CounterVec
	activeConns      *prometheus.GaugeVec
	upgraded         prometheus.Gauge
	proxyHeaderError *prometheus.CounterVec
	tlsHandshakes    *prometheus.CounterVec
	tlsErrors        *prometheus.CounterVec
	certReloads      *prometheus.CounterVec
	accessLogErrors  prometheus.Counter
	fastRequests     *prometheus.CounterVec
	fastHandOffs     *prometheus.CounterVec
	backends         *backendMetrics
	// series caches the children of requests and duration by route,
	// upstream, method and status class.
	series seriesCache
}

func newMetrics(reg prometheus.Registerer, s *Server) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidegate_l7_requests_total",
			Help: "Requests by route, method and status class (499 counts clients that left before the response).",
		}, []string{"route", "method", "status_class"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tidegate_l7_request_duration_seconds",
			Help:    "Time from request headers read to response complete, by route and upstream.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route", "upstream"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidegate_l7_upstream_retries_total",
			Help: "Requests sent again to another backend, by upstream.",
		}, []string{"upstream"}),
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidegate_l7_connections_total",
			Help: "Client connections accepted, by listener.",
		}, []string{"listener"}),
		activeConns: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tidegate_l7_connections_active",
			Help: "Client connections open, by listener.",
		}, []string{"listener"}),
		upgraded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tidegate_l7_upgraded_connections",
			Help: "Upgraded (for example WebSocket) connections open.",
		}),
		proxyHeaderError: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidegate_l7_proxy_header_errors_total",
			Help: "Connections closed because of the PROXY header: missing from a trusted peer, sent by an untrusted one, or invalid.",
		}, []string{"listener", "reason"}),
		tlsHandshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidegate_l7_tls_handshakes_total",
			Help: "Completed TLS handshakes by listener, version and resumption.",
		}, []string{"listener", "version", "resumed"}),
		tlsErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidegate_l7_tls_handshake_errors_total",
			Help: "Failed TLS handshakes by listener.",
		}, []string{"listener"}),
		certReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidegate_l7_certificate_reloads_total",
			Help: "Certificate and ticket-key reloads after a file change, by result.",
		}, []string{"result"}),
		accessLogErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tidegate_l7_access_log_errors_total",
			Help: "Access-log lines that could not be written.",
		}),
		fastRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidegate_l7_fast_path_requests_total",
			Help: "Requests forwarded by the HTTP/1.1 fast path, by listener.",
		}, []string{"listener"}),
		fastHandOffs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidegate_l7_fast_path_handoffs_total",
			Help: "Connections the HTTP/1.1 fast path passed to the general HTTP server, by listener and the reason of the request that needed it.",
		}, []string{"listener", "reason"}),
	}
	reg.MustRegister(m.requests, m.duration, m.retries, m.connections, m.activeConns, m.upgraded,
		m.proxyHeaderError, m.tlsHandshakes, m.tlsErrors, m.certReloads, m.accessLogErrors,
		m.fastRequests, m.fastHandOffs, &poolCollector{s: s})
	m.backends = newBackendMetrics(reg)
	// The key is route, upstream, method and status class.
	m.series.series = func(k seriesKey) requestSeries {
		return requestSeries{
			count:    m.requests.WithLabelValues(k[0], k[2], k[3]),
			duration: m.duration.WithLabelValues(k[0], k[1]),
		}
	}
	return m
}

func (m *metrics) observeRequest(route, upstream, method string, status int, elapsed time.Duration) {
	s := m.series.get(seriesKey{route, upstream, methodLabel(method), statusClass(status)})
	s.count.Inc()
	s.duration.Observe(elapsed.Seconds())
}

// methodLabel keeps the label set bounded: standard methods by name,
// anything else as "other".
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}

var statusClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

func statusClass(status int) string {
	if status == statusClientClosed {
		return "499"
	}
	if c := status / 100; c >= 1 && c <= 5 {
		return statusClasses[c-1]
	}
	return strconv.Itoa(status)
}

// poolCollector reports backend state of the pools currently serving,
// read at scrape time so replaced pools disappear after a reload.
type poolCollector struct {
	s *Server
}

var (
	backendHealthyDesc = prometheus.NewDesc("tidegate_l7_backend_healthy",
		"1 when the backend passes active health checks and is not ejected.", []string{"upstream", "backend"}, nil)
	backendEjectedDesc = prometheus.NewDesc("tidegate_l7_backend_ejected",
		"1 while the backend is passively ejected.", []string{"upstream", "backend"}, nil)
	backendEjectionsDesc = prometheus.NewDesc("tidegate_l7_backend_ejections_total",
		"Passive ejections of the backend since its pool was built.", []string{"upstream", "backend"}, nil)
	backendInFlightDesc = prometheus.NewDesc("tidegate_l7_backend_requests_in_flight",
		"Requests in flight to the backend.", []string{"upstream", "backend"}, nil)
	poolConnsDesc = prometheus.NewDesc("tidegate_l7_upstream_connections",
		"Connections to the backend: in_use is estimated from requests in flight, idle is the rest of the open connections.",
		[]string{"upstream", "backend", "state"}, nil)
)

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- backendHealthyDesc
	ch <- backendEjectedDesc
	ch <- backendEjectionsDesc
	ch <- backendInFlightDesc
	ch <- poolConnsDesc
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.state.Load()
	if st == nil {
		return
	}
	for name, pool := range st.pools {
		for _, b := range pool.Stats() {
			healthy, ejected := 0.0, 0.0
			if b.Healthy && !b.Ejected {
				healthy = 1
			}
			if b.Ejected {
				ejected = 1
			}
			// NOTE: HTTP/1.1 carries one request per connection, so in-use
			// connections equal requests in flight. In h2c pools several
			// requests share one connection, so this overstates in_use.
			inUse := min(b.InFlight, b.Conns)
			ch <- prometheus.MustNewConstMetric(backendHealthyDesc, prometheus.GaugeValue, healthy, name, b.Addr)
			ch <- prometheus.MustNewConstMetric(backendEjectedDesc, prometheus.GaugeValue, ejected, name, b.Addr)
			ch <- prometheus.MustNewConstMetric(backendEjectionsDesc, prometheus.CounterValue, float64(b.Ejections), name, b.Addr)
			ch <- prometheus.MustNewConstMetric(backendInFlightDesc, prometheus.GaugeValue, float64(b.InFlight), name, b.Addr)
			ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(inUse), name, b.Addr, "in_use")
			ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(b.Conns-inUse), name, b.Addr, "idle")
		}
	}
}
