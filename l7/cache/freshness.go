package cache

import (
	"net/http"
	"time"
)

// Heuristic freshness limits. RFC 9111 section 4.2.2 suggests a fraction of
// the time since Last-Modified and sets no bound, so the bound here is a
// choice shared by most caches.
const (
	heuristicFraction = 10 // lifetime is 1/heuristicFraction of Date minus Last-Modified
	heuristicMax      = 24 * time.Hour
)

// timing is the arrival record a cache keeps to compute a response's age
// later (RFC 9111 section 4.2.3).
type timing struct {
	requestTime  time.Time // when the request that fetched it was sent
	responseTime time.Time // when its header was received
	date         time.Time // the Date field, or responseTime when missing or invalid
	ageValue     int64     // the Age field in seconds, 0 when missing or invalid
}

// newTiming reads Date and Age from h.
func newTiming(h http.Header, requestTime, responseTime time.Time) timing {
	t := timing{requestTime: requestTime, responseTime: responseTime, date: responseTime}
	if d, err := http.ParseTime(h.Get("Date")); err == nil {
		t.date = d
	}
	t.ageValue = parseAge(h)
	return t
}

// correctedInitialAge is the age of the response when it was received
// (RFC 9111 section 4.2.3).
func (t timing) correctedInitialAge() time.Duration {
	apparentAge := max(0, t.responseTime.Sub(t.date))
	responseDelay := max(0, t.responseTime.Sub(t.requestTime))
	correctedAgeValue := time.Duration(t.ageValue)*time.Second + responseDelay
	return max(apparentAge, correctedAgeValue)
}

// currentAge is the age of the response at now (RFC 9111 section 4.2.3).
func (t timing) currentAge(now time.Time) time.Duration {
	residentTime := max(0, now.Sub(t.responseTime))
	return t.correctedInitialAge() + residentTime
}

// freshnessLifetime computes how long a response stays fresh in a shared
// cache (RFC 9111 section 4.2.1). heuristic allows a heuristic lifetime when
// the response has no explicit one (section 4.2.2). An invalid s-maxage,
// max-age or Expires value yields zero: the response is stale at once.
func freshnessLifetime(status int, h http.Header, cc directives, t timing, heuristic bool) (lifetime time.Duration, heuristicUsed bool) {
	switch {
	case cc.sMaxAge.present:
		return deltaDuration(cc.sMaxAge), false
	case cc.maxAge.present:
		return deltaDuration(cc.maxAge), false
	}

	if values := h.Values("Expires"); len(values) > 0 && !cc.targeted {
		expires, err := http.ParseTime(values[0])
		if err != nil {
			return 0, false
		}
		return max(0, expires.Sub(t.date)), false
	}

	if !heuristic || !(heuristicallyCacheable(status) || cc.public) {
		return 0, false
	}
	lastModified, err := http.ParseTime(h.Get("Last-Modified"))
	if err != nil {
		return 0, false
	}
	since := t.date.Sub(lastModified)
	if since <= 0 {
		return 0, false
	}
	return min(since/heuristicFraction, heuristicMax), true
}

// deltaDuration returns d as a duration, zero when its argument was invalid.
func deltaDuration(d delta) time.Duration {
	if !d.valid {
		return 0
	}
	return time.Duration(d.secs) * time.Second
}

// heuristicallyCacheable reports whether status is cacheable by default
// (RFC 9110 section 15.1).
func heuristicallyCacheable(status int) bool {
	switch status {
	case 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}
