package ratelimit

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are one route's series of the shared rate-limit metric vectors.
type metrics struct {
	decisions   *prometheus.CounterVec // curried with the route
	keys        prometheus.Gauge
	overflow    prometheus.Counter
	redisErrors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, route string) *metrics {
	decisions := registerOrReuse(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tidegate_l7_ratelimit_decisions_total",
		Help: "Rate-limit decisions by route and result (allowed, delayed, rejected).",
	}, []string{"route", "result"}))
	keys := registerOrReuse(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tidegate_l7_ratelimit_keys",
		Help: "Keys tracked by the local rate limiter of each route, as of the last sweep.",
	}, []string{"route"}))
	overflow := registerOrReuse(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tidegate_l7_ratelimit_overflow_total",
		Help: "Requests limited by the shared overflow bucket because max_keys keys were tracked.",
	}, []string{"route"}))
	redisErrors := registerOrReuse(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tidegate_l7_ratelimit_redis_errors_total",
		Help: "Redis rate-limit checks that failed and fell back to the local limiter.",
	}, []string{"route"}))
	return &metrics{
		decisions:   decisions.MustCurryWith(prometheus.Labels{"route": route}),
		keys:        keys.WithLabelValues(route),
		overflow:    overflow.WithLabelValues(route),
		redisErrors: redisErrors.WithLabelValues(route),
	}
}

// registerOrReuse registers c on reg, or returns the collector already
// registered under the same description, so that every route and every
// reload share one vector.
func registerOrReuse[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(fmt.Sprintf("ratelimit: register metrics: %v", err))
	}
	return c
}
