package l4

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tidegate/tidegate/shared/status"
)

// statusCollector builds the L4 status document from the balancer's state
// (weights, health) and from the registry (connection and byte counters of
// the engine), so the page shows exactly what /vips and /metrics show.
type statusCollector struct {
	balancer *Balancer
	engine   func() string
	sampler  *status.Sampler
}

// registerStatus adds /status, /status.json and the page assets to mux.
func registerStatus(mux status.Mux, b *Balancer, engine func() string, reg prometheus.Gatherer, logger *slog.Logger) {
	c := &statusCollector{balancer: b, engine: engine, sampler: status.NewSampler(reg)}
	status.Register(mux, c.collect, logger)
}

func (c *statusCollector) collect() (*status.Document, error) {
	w, err := c.sampler.Take()
	if err != nil {
		return nil, err
	}
	doc := &status.Document{
		Tier:              "l4",
		Generated:         time.Now(),
		RateWindowSeconds: w.Seconds(),
		L4: &status.L4{
			Engine: c.engine(),
			VIPs:   []status.VIP{},
			XDP:    status.Counters(w, "tidegate_l4_xdp_"),
		},
	}
	for _, v := range c.balancer.VIPs() {
		doc.L4.VIPs = append(doc.L4.VIPs, c.vipStatus(v, w))
	}
	return doc, nil
}

func (c *statusCollector) vipStatus(v *VIP, w status.Window) status.VIP {
	vs := statusOf(v)
	byVIP := map[string]string{"vip": v.Name}
	out := status.VIP{
		Name:              vs.Name,
		Address:           vs.Address,
		Engine:            c.engine(),
		ProxyProtocol:     vs.ProxyProtocol,
		Affinity:          vs.Affinity,
		UsableReals:       vs.UsableReals,
		ActiveConnections: w.Cur.Sum("tidegate_l4_connections_active", byVIP),
		AcceptRate:        w.Rate("tidegate_l4_connections_accepted_total", byVIP),
		Rejected:          map[string]float64{},
		Reals:             []status.Real{},
	}
	for _, se := range w.Cur.Select("tidegate_l4_connections_rejected_total", byVIP) {
		out.Rejected[se.Labels["reason"]] += se.Value
	}
	for _, rs := range vs.Reals {
		byReal := map[string]string{"vip": v.Name, "real": rs.Address}
		in := map[string]string{"vip": v.Name, "real": rs.Address, "direction": "client_to_real"}
		back := map[string]string{"vip": v.Name, "real": rs.Address, "direction": "real_to_client"}
		out.Reals = append(out.Reals, status.Real{
			Address:           rs.Address,
			State:             realState(rs.Healthy, rs.Weight),
			Healthy:           rs.Healthy,
			Weight:            rs.Weight,
			ConfigWeight:      rs.ConfigWeight,
			LastError:         rs.LastError,
			ActiveConnections: w.Cur.Sum("tidegate_l4_real_connections_active", byReal),
			Connections:       w.Cur.Sum("tidegate_l4_real_connections_total", byReal),
			ConnectionRate:    w.Rate("tidegate_l4_real_connections_total", byReal),
			BytesIn:           w.Cur.Sum("tidegate_l4_bytes_total", in),
			BytesOut:          w.Cur.Sum("tidegate_l4_bytes_total", back),
			BytesInRate:       w.Rate("tidegate_l4_bytes_total", in),
			BytesOutRate:      w.Rate("tidegate_l4_bytes_total", back),
		})
	}
	return out
}

// realState names a real's state for the page: a failed health check wins
// over a drain, because a down real needs attention even when drained.
func realState(healthy bool, weight int) string {
	switch {
	case !healthy:
		return status.StateDown
	case weight == 0:
		return status.StateDraining
	default:
		return status.StateUp
	}
}
