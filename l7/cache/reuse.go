package cache

import "time"

// verdict is the decision on how a stored entry may serve a request.
type verdict int

const (
	// verdictFresh: the entry is fresh enough for the request.
	verdictFresh verdict = iota
	// verdictMaxStale: stale, but the request's max-stale accepts it.
	verdictMaxStale
	// verdictStaleWhileRevalidate: stale within the response's
	// stale-while-revalidate window, so serve it and refresh in the
	// background.
	verdictStaleWhileRevalidate
	// verdictValidate: the entry must be revalidated (or replaced) first.
	verdictValidate
)

// reuse describes an entry at one moment.
type reuse struct {
	verdict verdict
	age     time.Duration
	ttl     time.Duration // lifetime minus age, negative when stale
	stale   bool          // age is at least the freshness lifetime
}

// evaluate decides whether e can serve a request with directives req at
// now, following RFC 9111 sections 4.2 and 5.2.1 and RFC 5861. strict
// honours no-cache in the stored response.
func evaluate(e *entry, req directives, now time.Time, strict bool) reuse {
	age := e.timing.currentAge(now)
	r := reuse{age: age, ttl: e.lifetime - age, stale: age >= e.lifetime}
	r.verdict = verdictValidate

	// Section 5.2.1.4 and 5.2.2.4: no-cache on either side means the entry
	// is never used without a successful validation.
	if req.noCache || (e.cc.noCache && strict) {
		return r
	}
	// Section 5.2.1.1: the client's max-age bounds the age, and an invalid
	// value is treated as 0, the conservative reading.
	if req.maxAge.present && age > deltaDuration(req.maxAge) {
		return r
	}
	// Section 5.2.1.3: min-fresh requests at least that much freshness left.
	if req.minFresh.present && req.minFresh.valid && r.ttl < deltaDuration(req.minFresh) {
		return r
	}
	if !r.stale {
		r.verdict = verdictFresh
		return r
	}

	// Section 4.2.4: a stale response is served without validation only
	// when nothing forbids it.
	if staleForbidden(e, strict) {
		return r
	}
	staleness := age - e.lifetime
	if req.maxStale.present && (req.maxStaleAny || (req.maxStale.valid && staleness <= deltaDuration(req.maxStale))) {
		r.verdict = verdictMaxStale
		return r
	}
	if e.cc.staleWhileRevalidate.valid && staleness <= deltaDuration(e.cc.staleWhileRevalidate) {
		r.verdict = verdictStaleWhileRevalidate
	}
	return r
}

// staleForbidden reports whether e carries a directive that forbids serving
// it stale: must-revalidate, proxy-revalidate, or s-maxage, which implies
// proxy-revalidate in a shared cache (RFC 9111 sections 5.2.2.2, 5.2.2.8
// and 5.2.2.10), or no-cache when honoured.
func staleForbidden(e *entry, strict bool) bool {
	return e.cc.mustRevalidate || e.cc.proxyRevalidate || e.cc.sMaxAge.present || (e.cc.noCache && strict)
}

// staleIfErrorAllowed reports whether e may replace an error response
// (RFC 5861 section 4): the response's or the request's stale-if-error
// window must cover its staleness at now.
func staleIfErrorAllowed(e *entry, req directives, now time.Time, strict bool) bool {
	if staleForbidden(e, strict) {
		return false
	}
	staleness := e.timing.currentAge(now) - e.lifetime
	for _, d := range []delta{e.cc.staleIfError, req.staleIfError} {
		if d.valid && staleness <= deltaDuration(d) {
			return true
		}
	}
	return false
}

// isServerError reports whether status is one of the errors RFC 5861
// section 4 lets stale-if-error hide. A failed connection to the upstream
// reaches the cache as a 502 or 504 written by the proxy.
func isServerError(status int) bool {
	switch status {
	case 500, 502, 503, 504:
		return true
	}
	return false
}
