//go:build linux

package xdp

import (
	"github.com/prometheus/client_golang/prometheus"
)

// statNames maps the program's per-CPU counters to metric label values.
var statNames = map[lbStat]struct{ kind, label string }{
	lbStatSTAT_FWD_PACKETS:        {"packets", "forward"},
	lbStatSTAT_FWD_BYTES:          {"bytes", "forward"},
	lbStatSTAT_REV_PACKETS:        {"packets", "reverse"},
	lbStatSTAT_REV_BYTES:          {"bytes", "reverse"},
	lbStatSTAT_NEW_FLOWS:          {"new_flows", ""},
	lbStatSTAT_HEADER_INSERTS:     {"header_inserts", ""},
	lbStatSTAT_FLOWS_CLOSED:       {"flows_closed", ""},
	lbStatSTAT_PASS_NOT_IPV4:      {"pass", "not_ipv4"},
	lbStatSTAT_PASS_NOT_TCP:       {"pass", "not_tcp"},
	lbStatSTAT_PASS_IP_OPTIONS:    {"pass", "ip_options"},
	lbStatSTAT_PASS_FRAGMENT:      {"pass", "fragment"},
	lbStatSTAT_PASS_NO_FLOW:       {"pass", "no_flow"},
	lbStatSTAT_PASS_SYN_DATA:      {"pass", "syn_data"},
	lbStatSTAT_PASS_FAST_OPEN:     {"pass", "fast_open"},
	lbStatSTAT_PASS_NO_REAL:       {"pass", "no_real"},
	lbStatSTAT_PASS_NO_PORT:       {"pass", "no_port"},
	lbStatSTAT_PASS_TABLE_FULL:    {"pass", "table_full"},
	lbStatSTAT_PASS_NEW_FLOWS_OFF: {"pass", "new_flows_off"},
	lbStatSTAT_PASS_BAD_TCP:       {"pass", "bad_tcp"},
	lbStatSTAT_DROP_NO_NEIGH:      {"drop", "no_neigh"},
	lbStatSTAT_DROP_NO_ROUTE:      {"drop", "no_route"},
	lbStatSTAT_DROP_FRAG_NEEDED:   {"drop", "frag_needed"},
	lbStatSTAT_DROP_NO_TX_PORT:    {"drop", "no_tx_port"},
	lbStatSTAT_DROP_HEADROOM:      {"drop", "headroom"},
}

// Stats returns the program's counters summed over all CPUs, keyed by
// kind and label as in the metrics, for example "pass/no_port".
func (d *Dataplane) Stats() (map[string]uint64, error) {
	out := make(map[string]uint64, len(statNames))
	for stat, name := range statNames {
		var perCPU []uint64
		if err := d.objs.Stats.Lookup(uint32(stat), &perCPU); err != nil {
			return nil, err
		}
		var sum uint64
		for _, v := range perCPU {
			sum += v
		}
		key := name.kind
		if name.label != "" {
			key += "/" + name.label
		}
		out[key] = sum
	}
	return out, nil
}

type collector struct {
	d *Dataplane

	packets, bytes, passes, drops  *prometheus.Desc
	newFlows, inserts, closedFlows *prometheus.Desc

	expired, orphans, portErrors prometheus.Counter
	flows                        prometheus.Gauge
}

func newCollector(d *Dataplane) *collector {
	return &collector{
		d:           d,
		packets:     prometheus.NewDesc("tidegate_l4_xdp_packets_total", "Packets the XDP program forwarded, by direction.", []string{"direction"}, nil),
		bytes:       prometheus.NewDesc("tidegate_l4_xdp_bytes_total", "Bytes of frames the XDP program forwarded, as received, by direction.", []string{"direction"}, nil),
		passes:      prometheus.NewDesc("tidegate_l4_xdp_pass_total", "Packets the XDP program handed to the kernel, by reason.", []string{"reason"}, nil),
		drops:       prometheus.NewDesc("tidegate_l4_xdp_drops_total", "Packets the XDP program dropped, by reason.", []string{"reason"}, nil),
		newFlows:    prometheus.NewDesc("tidegate_l4_xdp_new_flows_total", "Connections the XDP program took.", nil, nil),
		inserts:     prometheus.NewDesc("tidegate_l4_xdp_header_inserts_total", "Client segments that received the PROXY header, retransmissions included.", nil, nil),
		closedFlows: prometheus.NewDesc("tidegate_l4_xdp_flows_closed_total", "Connections that saw their first FIN or RST.", nil, nil),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tidegate_l4_xdp_flows_expired_total",
			Help: "Connections removed by the sweep, with their SNAT port returned.",
		}),
		orphans: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tidegate_l4_xdp_orphan_entries_total",
			Help: "Flow entries found without their other direction and removed.",
		}),
		portErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tidegate_l4_xdp_port_return_errors_total",
			Help: "SNAT ports the sweep failed to return to the free queue (leaked).",
		}),
		flows: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tidegate_l4_xdp_flows",
			Help: "Live XDP connections at the last sweep.",
		}),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.packets, c.bytes, c.passes, c.drops, c.newFlows, c.inserts, c.closedFlows} {
		ch <- d
	}
	c.expired.Describe(ch)
	c.orphans.Describe(ch)
	c.portErrors.Describe(ch)
	c.flows.Describe(ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	stats, err := c.d.Stats()
	if err == nil {
		for _, name := range statNames {
			key := name.kind
			if name.label != "" {
				key += "/" + name.label
			}
			v := float64(stats[key])
			switch name.kind {
			case "packets":
				ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, v, name.label)
			case "bytes":
				ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, v, name.label)
			case "pass":
				ch <- prometheus.MustNewConstMetric(c.passes, prometheus.CounterValue, v, name.label)
			case "drop":
				ch <- prometheus.MustNewConstMetric(c.drops, prometheus.CounterValue, v, name.label)
			case "new_flows":
				ch <- prometheus.MustNewConstMetric(c.newFlows, prometheus.CounterValue, v)
			case "header_inserts":
				ch <- prometheus.MustNewConstMetric(c.inserts, prometheus.CounterValue, v)
			case "flows_closed":
				ch <- prometheus.MustNewConstMetric(c.closedFlows, prometheus.CounterValue, v)
			}
		}
	} else {
		c.d.logger.Warn("read xdp counters", "err", err)
	}
	c.expired.Collect(ch)
	c.orphans.Collect(ch)
	c.portErrors.Collect(ch)
	c.flows.Collect(ch)
}
