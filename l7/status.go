package l7

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tidegate/tidegate/l7/upstream"
	"github.com/tidegate/tidegate/shared/config"
	"github.com/tidegate/tidegate/shared/status"
)

// statusCollector builds the L7 status document from the serving state
// (routes, pools and their backends' health) and from the registry
// (request, latency and connection series).
type statusCollector struct {
	s       *Server
	sampler *status.Sampler
}

// registerStatus adds /status, /status.json and the page assets to mux.
func registerStatus(mux status.Mux, s *Server, reg prometheus.Gatherer, logger *slog.Logger) {
	c := &statusCollector{s: s, sampler: status.NewSampler(reg)}
	status.Register(mux, c.collect, logger)
}

func (c *statusCollector) collect() (*status.Document, error) {
	w, err := c.sampler.Take()
	if err != nil {
		return nil, err
	}
	st := c.s.state.Load()
	out := &status.L7{
		Listeners: []status.Listener{},
		Routes:    []status.Route{},
		Cache:     status.Counters(w, "tidegate_l7_cache_"),
		RateLimit: status.Counters(w, "tidegate_l7_ratelimit_"),
	}
	for _, l := range c.s.listeners {
		cfg := l.settings.Load().cfg
		byListener := map[string]string{"listener": l.name}
		out.Listeners = append(out.Listeners, status.Listener{
			Name:              l.name,
			Address:           cfg.Address,
			TLS:               cfg.TLS != nil,
			ActiveConnections: w.Cur.Sum("tidegate_l7_connections_active", byListener),
			ConnectionRate:    w.Rate("tidegate_l7_connections_total", byListener),
		})
	}
	for _, rc := range st.cfg.Routes {
		out.Routes = append(out.Routes, routeStatus(rc, w))
	}
	out.Upstreams = c.upstreamsIn(st, w)
	out.CacheHitRatio, out.RateLimitedRate = cacheAndLimitFigures(w)
	return &status.Document{
		Tier:              "l7",
		Generated:         time.Now(),
		RateWindowSeconds: w.Seconds(),
		L7:                out,
	}, nil
}

// upstreamsIn reports the pools of st in configuration order.
func (c *statusCollector) upstreamsIn(st *state, w status.Window) []status.Upstream {
	out := []status.Upstream{}
	for _, uc := range st.cfg.Upstreams {
		if pool := st.pools[uc.Name]; pool != nil {
			out = append(out, upstreamStatus(uc, pool, w))
		}
	}
	return out
}

func routeStatus(rc config.Route, w status.Window) status.Route {
	byRoute := map[string]string{"route": rc.Name}
	out := status.Route{
		Name:        rc.Name,
		Match:       describeMatch(rc.Match),
		Upstream:    rc.Upstream,
		Requests:    w.Cur.Sum("tidegate_l7_requests_total", byRoute),
		RequestRate: w.Rate("tidegate_l7_requests_total", byRoute),
	}
	all, ok := w.Increase("tidegate_l7_requests_total", byRoute)
	if ok && all > 0 {
		errs, _ := w.Increase("tidegate_l7_requests_total", map[string]string{"route": rc.Name, "status_class": "5xx"})
		ratio := errs / all
		out.ErrorRatio = &ratio
	}
	return out
}

// upstreamStatus reports a pool. Request rate and latency are per pool:
// tidegate_l7_request_duration_seconds is labelled by upstream, and the
// proxy keeps no per-backend request counters.
func upstreamStatus(uc config.Upstream, pool *upstream.Pool, w status.Window) status.Upstream {
	const latency = "tidegate_l7_request_duration_seconds"
	byUpstream := map[string]string{"upstream": uc.Name}
	balance := uc.Balance
	if balance == "" {
		balance = "round_robin"
	}
	out := status.Upstream{
		Name:        uc.Name,
		Balance:     balance,
		RequestRate: w.Rate(latency+"_count", byUpstream),
		LatencyP50:  w.Quantile(0.5, latency, byUpstream),
		LatencyP90:  w.Quantile(0.9, latency, byUpstream),
		LatencyP99:  w.Quantile(0.99, latency, byUpstream),
		Backends:    []status.Backend{},
	}
	backends := pool.Backends()
	for i, bs := range pool.Stats() {
		b := backendStatus(bs, backends[i].Weight)
		addBackendRequests(&b, uc.Name, w)
		out.Backends = append(out.Backends, b)
	}
	return out
}

// addBackendRequests fills in the request figures of one backend.
func addBackendRequests(b *status.Backend, upstream string, w status.Window) {
	const requests, latency = "tidegate_l7_backend_requests_total", "tidegate_l7_backend_request_duration_seconds"
	byBackend := map[string]string{"upstream": upstream, "backend": b.Address}
	b.RequestRate = w.Rate(requests, byBackend)
	all, ok := w.Increase(requests, byBackend)
	if ok && all > 0 {
		errs, _ := w.Increase(requests, map[string]string{"upstream": upstream, "backend": b.Address, "status_class": "5xx"})
		ratio := errs / all
		b.ErrorRatio = &ratio
	}
	b.LatencyP50 = w.Quantile(0.5, latency, byBackend)
	b.LatencyP99 = w.Quantile(0.99, latency, byBackend)
}

func backendStatus(bs upstream.Stats, weight int) status.Backend {
	return status.Backend{
		Address:     bs.Addr,
		State:       backendState(bs, weight),
		Healthy:     bs.Healthy,
		Ejected:     bs.Ejected,
		Draining:    bs.Draining,
		Weight:      weight,
		InFlight:    bs.InFlight,
		Connections: bs.Conns,
		Ejections:   bs.Ejections,
	}
}

func backendState(bs upstream.Stats, weight int) string {
	switch {
	case !bs.Healthy:
		return status.StateDown
	case bs.Ejected:
		return status.StateEjected
	case weight == 0, bs.Draining:
		return status.StateDraining
	default:
		return status.StateUp
	}
}

// describeMatch writes a route's conditions in one line, for example
// "host api.example.com path /v1/* method GET,HEAD".
func describeMatch(m config.RouteMatch) string {
	var parts []string
	if len(m.Hosts) > 0 {
		parts = append(parts, "host "+strings.Join(m.Hosts, ","))
	}
	switch {
	case m.Path != "":
		parts = append(parts, "path "+m.Path)
	case m.PathPrefix != "":
		parts = append(parts, "prefix "+m.PathPrefix)
	case m.PathRegex != "":
		parts = append(parts, "regex "+m.PathRegex)
	}
	if len(m.Methods) > 0 {
		parts = append(parts, "method "+strings.Join(m.Methods, ","))
	}
	names := make([]string, 0, len(m.Headers))
	for name := range m.Headers {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		parts = append(parts, fmt.Sprintf("header %s=%s", name, m.Headers[name]))
	}
	if len(parts) == 0 {
		return "any request"
	}
	return strings.Join(parts, " ")
}

// Series of the L7 cache and rate limiter that the summary figures read.
// NOTE: these names and the "result" label are those the l7/cache and
// l7/ratelimit packages register; the figures stay absent if they change.
const (
	cacheHitsSeries      = "tidegate_l7_cache_hits_total"
	cacheMissesSeries    = "tidegate_l7_cache_misses_total"
	rateLimitDecisions   = "tidegate_l7_ratelimit_decisions_total"
	rateLimitRejectedTag = "rejected"
)

// cacheAndLimitFigures returns the cache hit ratio and the rate of
// requests rejected by a rate limit over w, each nil when unknown.
func cacheAndLimitFigures(w status.Window) (hitRatio, limited *float64) {
	if len(w.Cur.Select(cacheHitsSeries, nil)) > 0 {
		hits, ok := w.Increase(cacheHitsSeries, nil)
		misses, _ := w.Increase(cacheMissesSeries, nil)
		if ok && hits+misses > 0 {
			ratio := hits / (hits + misses)
			hitRatio = &ratio
		}
	}
	if len(w.Cur.Select(rateLimitDecisions, nil)) > 0 {
		limited = w.Rate(rateLimitDecisions, map[string]string{"result": rateLimitRejectedTag})
	}
	return hitRatio, limited
}
