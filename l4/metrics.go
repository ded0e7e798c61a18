package l4

import "github.com/prometheus/client_golang/prometheus"

// metrics are the control-plane series. Each engine registers its own
// connection counters.
type metrics struct {
	healthy  *prometheus.GaugeVec
	weight   *prometheus.GaugeVec
	usable   *prometheus.GaugeVec
	rebuilds *prometheus.CounterVec
	engine   *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		healthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tidegate_l4_real_healthy",
			Help: "1 when the real passes its health checks, 0 when it is marked down.",
		}, []string{"vip", "real"}),
		weight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tidegate_l4_real_weight",
			Help: "Current Maglev weight of the real; 0 means draining.",
		}, []string{"vip", "real"}),
		usable: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tidegate_l4_vip_usable_reals",
			Help: "Reals in the VIP's current Maglev table (healthy with a positive weight).",
		}, []string{"vip"}),
		rebuilds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidegate_l4_maglev_rebuilds_total",
			Help: "Maglev tables built and published for the VIP.",
		}, []string{"vip"}),
		engine: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tidegate_l4_engine_info",
			Help: "1 for the L4 engine that carries connections.",
		}, []string{"engine"}),
	}
	for _, c := range []prometheus.Collector{m.healthy, m.weight, m.usable, m.rebuilds, m.engine} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) forgetReal(vip, real string) {
	m.healthy.DeleteLabelValues(vip, real)
	m.weight.DeleteLabelValues(vip, real)
}

func (m *metrics) forgetVIP(vip string) {
	m.healthy.DeletePartialMatch(prometheus.Labels{"vip": vip})
	m.weight.DeletePartialMatch(prometheus.Labels{"vip": vip})
	m.usable.DeleteLabelValues(vip)
	m.rebuilds.DeleteLabelValues(vip)
}
