// Package cache is the L7 shared HTTP cache: an RFC 9111 cache held in
// memory, used as middleware in front of the upstream handler of a route.
//
// # Wiring
//
// One [Cache] serves every route from one memory budget:
//
//	c, err := cache.New(cache.ConfigFrom(cfg.L7.Cache), logger, adm.Registry)
//	...
//	h := c.Middleware(cache.PolicyFrom(route.Name, route.Cache), upstreamHandler)
//	adm.HandleMutating("POST /cache/purge", c.PurgeHandler())
//	adm.HandleMutating("DELETE /cache/purge", c.PurgeHandler())
//
// The upstream handler (an httputil.ReverseProxy) performs each upstream
// request. The middleware calls it with the client's request for misses,
// with a conditional copy for revalidations, and from a goroutine for
// stale-while-revalidate refreshes, whose context carries the values of the
// original request but not its cancellation. A request that arrived over TLS
// (r.TLS != nil) is keyed with the https scheme. Compression belongs between
// the cache and the upstream, so that one variant is stored per content
// coding.
//
// # What is stored
//
// Responses to GET and HEAD that RFC 9111 section 3 allows a shared cache to
// store: a final status that is cacheable by default or has explicit
// freshness, no no-store, no private (unless the route is not strict), no
// Authorization on the request unless the response has public, s-maxage or
// must-revalidate, no Set-Cookie unless the route allows it, and no
// "Vary: *". Set-Cookie, hop-by-hop fields and fields named by a qualified
// private are removed from the stored copy. A response larger than the
// route's maximum entry size streams to the client and is not kept. Partial
// content (206) is never stored, and a HEAD response is stored apart, for
// HEAD requests only.
//
// # Keys and variants
//
// The key is the method class (GET and HEAD share one), scheme, host with
// any non-default port, and the normalised path with query. The request
// fields named by the response's Vary select among variants, with
// Accept-Encoding reduced to the coding that would be chosen (br, zstd,
// gzip or identity). A response with a Content-Encoding is varied on
// Accept-Encoding even when its Vary omits it. Extra key parts configured
// per route (a header, a cookie, the client address) must match too.
//
// # Reuse
//
// Freshness follows RFC 9111 section 4.2 (s-maxage, max-age, Expires minus
// Date, heuristic from Last-Modified where allowed), and the request
// directives no-cache, no-store, max-age, max-stale, min-fresh and
// only-if-cached are honoured. Stale entries are revalidated with
// If-None-Match and If-Modified-Since; stale-while-revalidate serves the
// stale entry and refreshes once in the background; stale-if-error serves it
// when the upstream answers 500, 502, 503 or 504, which is also how a failed
// connection reaches the cache. Concurrent misses for one key are coalesced
// into one upstream request. Every response from the cache carries Age, and
// every response carries an RFC 9211 Cache-Status member.
//
// A successful POST, PUT, DELETE, PATCH or other unsafe request removes the
// entries for its URI and for same-origin Location and Content-Location.
//
// # Metrics
//
// Series start with tidegate_l7_cache_: size_bytes, entries, hits_total,
// misses_total, stale_served_total, revalidations_total, stored_total,
// not_stored_total, coalesced_total, evictions_total, purged_total and
// invalidated_total.
//
// BUG: A qualified no-cache ("no-cache=Set-Cookie") is treated as an
// unqualified one, which RFC 9111 section 5.2.2.4 allows but which
// revalidates more often than needed.
package cache
