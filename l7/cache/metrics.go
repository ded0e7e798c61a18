package cache

import "github.com/prometheus/client_golang/prometheus"

// metrics are the cache's Prometheus series. Counters carry the route name
// so that operators can see which routes benefit from the cache.
type metrics struct {
	hits          *prometheus.CounterVec
	misses        *prometheus.CounterVec
	staleServed   *prometheus.CounterVec
	revalidations *prometheus.CounterVec
	stored        *prometheus.CounterVec
	notStored     *prometheus.CounterVec
	coalesced     *prometheus.CounterVec
	evictions     prometheus.Counter
	purged        prometheus.Counter
	invalidated   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, s *store) (*metrics, error) {
	m := &metrics{
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidegate_l7_cache_hits_total",
			Help: "Requests served from the cache without contacting the upstream, including those that waited for a concurrent request.",
		}, []string{"route"}),
		misses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidegate_l7_cache_misses_total",
			Help: "GET and HEAD requests forwarded upstream because no stored entry could be used without contacting it.",
		}, []string{"route"}),
		staleServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidegate_l7_cache_stale_served_total",
			Help: "Stale responses served, by reason (max_stale, stale_while_revalidate, stale_if_error).",
		}, []string{"route", "reason"}),
		revalidations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidegate_l7_cache_revalidations_total",
			Help: "Conditional requests sent to refresh stale entries, by result (not_modified, modified, error).",
		}, []string{"route", "result"}),
		stored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidegate_l7_cache_stored_total",
			Help: "Responses stored in the cache.",
		}, []string{"route"}),
		notStored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidegate_l7_cache_not_stored_total",
			Help: "Responses to cacheable requests that were not stored, by reason.",
		}, []string{"route", "reason"}),
		coalesced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidegate_l7_cache_coalesced_total",
			Help: "Requests that waited for a concurrent request for the same key instead of going upstream.",
		}, []string{"route"}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tidegate_l7_cache_evictions_total",
			Help: "Entries evicted to stay within the memory budget.",
		}),
		purged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tidegate_l7_cache_purged_total",
			Help: "Entries removed through the admin purge endpoint.",
		}),
		invalidated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tidegate_l7_cache_invalidated_total",
			Help: "Entries removed because an unsafe request to their URI succeeded.",
		}),
	}
	size := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tidegate_l7_cache_size_bytes",
		Help: "Bytes of header fields and bodies stored, as counted against the budget.",
	}, func() float64 {
		n, _ := s.stats()
		return float64(n)
	})
	entries := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tidegate_l7_cache_entries",
		Help: "Responses stored.",
	}, func() float64 {
		_, n := s.stats()
		return float64(n)
	})
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{
		m.hits, m.misses, m.staleServed, m.revalidations, m.stored, m.notStored,
		m.coalesced, m.evictions, m.purged, m.invalidated, size, entries,
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
