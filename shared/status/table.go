package status

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteTable prints d as compact text tables: one row per real for an L4,
// and listeners, routes, upstreams and one row per backend for an L7.
func WriteTable(w io.Writer, d *Document) error {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "tidegate %s  generated %s  rate window %.1fs\n", d.Tier, d.Generated.UTC().Format("2006-01-02 15:04:05 UTC"), d.RateWindowSeconds)
	if l4 := d.L4; l4 != nil {
		fmt.Fprintf(tw, "engine %s\n\n", l4.Engine)
		fmt.Fprintln(tw, "VIP\tREAL\tSTATE\tWEIGHT\tACTIVE\tCONN/S\tIN\tOUT\tLAST ERROR")
		for _, v := range l4.VIPs {
			if len(v.Reals) == 0 {
				fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t\n", v.Name)
			}
			for _, r := range v.Reals {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", v.Name, r.Address, strings.ToUpper(r.State),
					r.Weight, formatCount(r.ActiveConnections), formatRate(r.ConnectionRate),
					formatBytes(r.BytesIn), formatBytes(r.BytesOut), r.LastError)
			}
		}
		writeCounters(tw, l4.XDP)
	}
	if l7 := d.L7; l7 != nil {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "LISTENER\tADDRESS\tTLS\tACTIVE\tCONN/S")
		for _, l := range l7.Listeners {
			fmt.Fprintf(tw, "%s\t%s\t%t\t%s\t%s\n", l.Name, l.Address, l.TLS, formatCount(l.ActiveConnections), formatRate(l.ConnectionRate))
		}
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "ROUTE\tUPSTREAM\tREQ/S\t5XX\tMATCH")
		for _, r := range l7.Routes {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, r.Upstream, formatRate(r.RequestRate), formatPercent(r.ErrorRatio), r.Match)
		}
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "UPSTREAM\tBALANCE\tREQ/S\tP50\tP90\tP99")
		for _, u := range l7.Upstreams {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", u.Name, u.Balance, formatRate(u.RequestRate),
				formatSeconds(u.LatencyP50), formatSeconds(u.LatencyP90), formatSeconds(u.LatencyP99))
		}
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "UPSTREAM\tBACKEND\tSTATE\tWEIGHT\tREQ/S\t5XX\tP50\tP99\tIN FLIGHT\tCONNS\tEJECTIONS")
		for _, u := range l7.Upstreams {
			for _, b := range u.Backends {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%d\t%d\t%d\n", u.Name, b.Address, strings.ToUpper(b.State),
					b.Weight, formatRate(b.RequestRate), formatPercent(b.ErrorRatio), formatSeconds(b.LatencyP50), formatSeconds(b.LatencyP99),
					b.InFlight, b.Connections, b.Ejections)
			}
		}
		writeCounters(tw, append(append([]Counter{}, l7.Cache...), l7.RateLimit...))
	}
	if probs := d.Problems(); len(probs) > 0 {
		fmt.Fprintln(tw)
		for _, p := range probs {
			fmt.Fprintf(tw, "%s: %s %s\n", strings.ToUpper(p.State), p.Group, p.Address)
		}
	}
	return tw.Flush()
}

func writeCounters(w io.Writer, counters []Counter) {
	if len(counters) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "SERIES\tLABELS\tVALUE\tRATE")
	for _, c := range counters {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", c.Name, formatLabels(c.Labels), formatCount(c.Value), formatRate(c.Rate))
	}
}
