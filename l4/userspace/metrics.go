package userspace

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	accepted     *prometheus.CounterVec // vip
	rejected     *prometheus.CounterVec // vip, reason
	acceptErrors *prometheus.CounterVec // vip
	active       *prometheus.GaugeVec   // vip
	realConns    *prometheus.CounterVec // vip, real
	realActive   *prometheus.GaugeVec   // vip, real
	dialFailures *prometheus.CounterVec // vip, real
	bytes        *prometheus.CounterVec // vip, real, direction
	dialSeconds  *prometheus.HistogramVec
}

// Reasons a client connection is closed without reaching a real, the
// values of the "reason" label of tidegate_l4_connections_rejected_total.
const (
	rejectLimit      = "limit"       // the VIP's max_connections was reached
	rejectNoReal     = "no_real"     // no real is healthy with a positive weight
	rejectDialFailed = "dial_failed" // every real tried refused or timed out
	rejectDraining   = "draining"    // accepted while the engine stopped
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidegate_l4_connections_accepted_total",
			Help: "Client connections accepted on the VIP.",
		}, []string{"vip"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidegate_l4_connections_rejected_total",
			Help: "Client connections closed without reaching a real, by reason (limit, no_real, dial_failed, draining).",
		}, []string{"vip", "reason"}),
		acceptErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidegate_l4_accept_errors_total",
			Help: "Errors returned by accept on the VIP's listener, such as EMFILE.",
		}, []string{"vip"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tidegate_l4_connections_active",
			Help: "Client connections open on the VIP, including those still dialing a real.",
		}, []string{"vip"}),
		realConns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidegate_l4_real_connections_total",
			Help: "Connections established to the real and given a PROXY header.",
		}, []string{"vip", "real"}),
		realActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tidegate_l4_real_connections_active",
			Help: "Connections open to the real.",
		}, []string{"vip", "real"}),
		dialFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidegate_l4_real_dial_failures_total",
			Help: "Dials to the real that failed or timed out, or whose PROXY header write failed.",
		}, []string{"vip", "real"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidegate_l4_bytes_total",
			Help: "Payload bytes copied, by direction (client_to_real or real_to_client); PROXY headers are not counted.",
		}, []string{"vip", "real", "direction"}),
		dialSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tidegate_l4_dial_duration_seconds",
			Help:    "Time to open a TCP connection to the real, failures included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9), // 100µs to about 6.5s
		}, []string{"vip", "real"}),
	}
	cs := []prometheus.Collector{m.accepted, m.rejected, m.acceptErrors, m.active, m.realConns,
		m.realActive, m.dialFailures, m.bytes, m.dialSeconds}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
