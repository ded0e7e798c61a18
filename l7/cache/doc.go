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
// Routes without caching should go through [Cache.Invalidator], so that
// their POST, PUT, DELETE and PATCH requests still invalidate what cached
// routes stored for the same URI.
//
// On a configuration reload, build new handlers with Middleware on the same
// Cache to keep the stored entries, and call [Cache.Resize] when the budget
// changes.
//
// On drain, call [Cache.WaitContext] with the drain deadline, so that
// stale-while-revalidate refreshes still running can store their
// responses. The L7 server gives each refresh its own request state through
// [Config.DetachContext].
//
// The upstream handler (an httputil.ReverseProxy) performs each upstream
// request. The middleware calls it with the client's request for misses,
// with a conditional copy for revalidations, and from a goroutine for
// stale-while-revalidate refreshes, whose context carries the values of the
// original request but not its cancellation. A request that arrived over TLS
// (r.TLS set, or TLS in its conninfo) is keyed with the https scheme. Compression belongs between
// the cache and the upstream, so that one variant is stored per content
// coding.
//
// # Configuration
//
// The YAML keys, validated by the config package:
//
//	l7:
//	  cache:
//	    max_size: 256MiB          # memory budget shared by all routes
//	  routes:
//	    - name: static
//	      upstream: app
//	      cache:
//	        enabled: true
//	        key: [header:X-Tenant, cookie:plan]  # or "client"; none by default
//	        max_entry_size: 8MiB  # larger responses stream and are not kept
//	        strict: true          # honour private and no-cache (default)
//	        store_set_cookie: false
//	        heuristic: true       # freshness from Last-Modified (default)
//	        coalesce_timeout: 10s
//
// # What is stored
//
// Responses to GET and HEAD that RFC 9111 section 3 allows a shared cache to
// store. The status must be final and cacheable by default, or the response
// must carry explicit freshness. Responses with no-store or "Vary: *" are
// not stored, and neither are those with private unless the route is not
// strict. A request with Authorization needs public, s-maxage or
// must-revalidate in the response, and Set-Cookie needs the route's consent. Set-Cookie, hop-by-hop fields and fields named by a qualified
// private are removed from the stored copy. A response larger than the
// route's maximum entry size streams to the client and is not kept. Partial
// content (206) and 416 responses are never stored, and a HEAD response is
// stored apart, for HEAD requests only.
//
// # Keys and variants
//
// The key is the method class (GET and HEAD share one), scheme, host with
// any non-default port, and the normalised path with query. The request
// fields named by the response's Vary select among variants, with
// Accept-Encoding reduced to the coding that would be chosen (br, zstd,
// gzip or identity) and Accept-Language compared without regard to case.
// A response with a Content-Encoding is varied on Accept-Encoding even when
// its Vary omits it. Extra key parts configured
// per route (a header, a cookie, the client address) must match too.
//
// # Reuse
//
// Freshness follows RFC 9111 section 4.2 (s-maxage, max-age, Expires minus
// Date, heuristic from Last-Modified where allowed). Unless a route sets
// cdn_cache_control to false, the cache acts as the edge cache of the site
// it fronts: a valid CDN-Cache-Control (RFC 9213) replaces Cache-Control
// and Expires for storing and reuse, and both fields still reach the
// client unchanged. The request
// directives no-cache, no-store, max-age, max-stale, min-fresh and
// only-if-cached are honoured. Stale entries are revalidated with
// If-None-Match and If-Modified-Since. Within a stale-while-revalidate
// window the stale entry is served and refreshed once in the background.
// Within a stale-if-error window it replaces a 500, 502, 503 or 504 from the
// upstream, and the proxy reports a failed connection as 502 or 504. Concurrent misses for one key are coalesced
// into one upstream request. Every response from the cache carries Age, and
// every response on a route with caching enabled carries an RFC 9211
// Cache-Status member.
//
// A successful POST, PUT, DELETE, PATCH or other unsafe request removes the
// entries for its URI and for same-origin Location and Content-Location.
// Upgrades, and GET or HEAD requests with a body or a method-override field
// (X-HTTP-Method-Override and similar), bypass the cache because the
// upstream may return a response that the key does not describe.
//
// # Metrics
//
// Series start with tidegate_l7_cache_: size_bytes, entries, hits_total,
// misses_total, stale_served_total, revalidations_total, stored_total,
// not_stored_total, coalesced_total, evictions_total, purged_total and
// invalidated_total.
//
// # Limits
//
//   - A qualified no-cache ("no-cache=Set-Cookie") is treated as an
//     unqualified one, which RFC 9111 section 5.2.2.4 allows, so such
//     responses are revalidated on every use.
//   - A 304 with a strong ETag updates every variant stored with that ETag.
//     A 304 with only a weak ETag or Last-Modified, and a 200 to HEAD,
//     update only the entry for the request's own variant.
//   - A 304 or a 200 to HEAD that changes Vary removes the entry it would
//     update, because the entry keeps request values only for the fields
//     its old Vary named.
//   - A Range request that misses is forwarded as is, and the 206 it gets is
//     not stored. A Range request that hits a stored 200 gets a 206 built
//     from the stored body.
//   - Purging by prefix scans every key while holding the store's lock.
//   - The budget counts stored entries only. Each cacheable response in
//     flight also buffers up to the route's maximum entry size until it is
//     stored or found too large.
//   - Entries live in memory only; there is no disk tier.
package cache
