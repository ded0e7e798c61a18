// Package ratelimit limits the request rate of a route per key.
//
// Each key has a token bucket (golang.org/x/time/rate) that refills at
// requests/per and holds burst tokens. The key is the real client address
// by default, taken only from the accessor the core passes in, so a
// client-supplied X-Forwarded-For changes nothing. The key can instead be a
// header or a cookie (requests without it fall back to the client address)
// or the route as a whole. Buckets idle long enough to be full again are
// removed by a sweeper. At most max_keys are tracked, and keys beyond that
// share one overflow bucket, so memory stays bounded under a flood of keys.
//
// An excess request gets 429 with Retry-After. Every response carries the
// IETF RateLimit-Policy and RateLimit headers in their structured-field form
// ("route";q=10;w=1 and "route";r=3;t=1). With delay set, requests above the
// rate wait until they conform, up to burst of them, like nginx's burst
// without nodelay.
//
// With a redis section the buckets live in Redis (one GCRA script call per
// request, Redis's clock), so every L7 node shares the limit. Use it for keys
// the L4 does not pin to one node: with client affinity on the VIP, a client
// key is exact on its node without Redis. When Redis fails, checks fall back
// to the local buckets for a second at a time, the switch is logged once each
// way, and no request fails because of Redis.
//
// Wiring, per route whose merged policy has a rate_limit section:
//
//	lim, err := ratelimit.New(policy.RateLimit, ratelimit.Options{
//		Route: route.Name, ClientAddr: clientAddr,
//		Registerer: adminRegistry, Logger: logger,
//		OnDecision: func(r *http.Request, d ratelimit.Decision) { ... },
//	})
//	handler = lim.Middleware(handler)
//	// on reload or shutdown, after the route is retired:
//	lim.Close()
//
// Metrics: tidegate_l7_ratelimit_decisions_total{route,result},
// tidegate_l7_ratelimit_keys{route}, tidegate_l7_ratelimit_overflow_total{route}
// and tidegate_l7_ratelimit_redis_errors_total{route}.
//
// Access-log fields, from the [Decision] given to OnDecision:
// ratelimit_result (allowed, delayed or rejected), ratelimit_delay (the
// wait, when delayed), ratelimit_remaining and ratelimit_shared (whether
// Redis decided).
package ratelimit
