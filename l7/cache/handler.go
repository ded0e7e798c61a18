package cache

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tidegate/tidegate/l7/passthrough"
)

// handler is the middleware of one route.
type handler struct {
	c     *Cache
	p     RoutePolicy
	parts []keyPart
	sp    storePolicy
	next  http.Handler
	// hits is the route's hit counter, looked up once instead of per hit.
	hits prometheus.Counter
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if bypass(r) {
		h.forwardUncached(w, r, "bypass")
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		h.serveCacheable(w, r)
	case http.MethodOptions, http.MethodTrace:
		h.forwardUncached(w, r, "method")
	default:
		h.serveUnsafe(w, r)
	}
}

// first is h.Get(name) for a name already in canonical form, which a hit
// on the fast path saves canonicalising again.
func first(h http.Header, name string) string {
	if v := h[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// methodOverrides are fields some frameworks read to run a GET as another
// method; such a request could store a POST result under a GET key.
var methodOverrides = []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"}

// bypass reports whether r must skip the cache entirely. Upgrades
// (WebSocket) are connections rather than responses. A GET or HEAD with a
// body or a method override can make the upstream return a response that
// the key does not describe.
func bypass(r *http.Request) bool {
	if first(r.Header, "Upgrade") != "" {
		return true
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	if r.ContentLength != 0 || len(r.TransferEncoding) > 0 {
		return true
	}
	for _, f := range methodOverrides {
		if first(r.Header, f) != "" {
			return true
		}
	}
	return false
}

// serveCacheable serves a GET or HEAD request from the cache or upstream.
func (h *handler) serveCacheable(w http.ResponseWriter, r *http.Request) {
	reqCC := parseRequestCacheControl(r.Header)
	if reqCC.noStore {
		// RFC 9111 section 5.2.1.5: nothing of this exchange is stored.
		h.forwardUncached(w, r, "request")
		return
	}
	k := buildKey(r, h.parts)
	head := r.Method == http.MethodHead

	e, found := h.c.store.get(k, r.Header, head)
	if e == nil {
		if reqCC.onlyIfCached {
			h.gatewayTimeout(w, r)
			return
		}
		h.forwardCoalesced(w, r, k, reqCC, nil, missReason(found))
		return
	}

	now := h.c.now()
	ru := evaluate(e, reqCC, now, h.sp.strict)
	switch ru.verdict {
	case verdictFresh:
		h.hits.Inc()
		h.report(w, r, ResultHit)
		h.serveStored(w, r, e, now, cacheStatus{hit: true})
		return
	case verdictMaxStale:
		h.hits.Inc()
		h.c.metrics.staleServed.WithLabelValues(h.p.Route, "max_stale").Inc()
		h.report(w, r, ResultStale)
		h.serveStored(w, r, e, now, cacheStatus{hit: true})
		return
	case verdictStaleWhileRevalidate:
		h.hits.Inc()
		h.c.metrics.staleServed.WithLabelValues(h.p.Route, "stale_while_revalidate").Inc()
		h.refreshInBackground(r, k, e)
		h.report(w, r, ResultStale)
		h.serveStored(w, r, e, now, cacheStatus{hit: true, detail: "stale-while-revalidate"})
		return
	}

	if reqCC.onlyIfCached {
		h.gatewayTimeout(w, r)
		return
	}
	fwd := "stale"
	if !ru.stale {
		fwd = "request"
	}
	h.forwardCoalesced(w, r, k, reqCC, e, fwd)
}

func missReason(l lookupResult) string {
	if l == lookupVaryMiss {
		return "vary-miss"
	}
	return "uri-miss"
}

// forwardCoalesced makes one upstream request for concurrent requests with
// the same key. The first request becomes the leader and forwards. The
// others wait for it up to the route's coalesce timeout, then serve what it
// stored, or forward themselves when nothing usable was stored.
func (h *handler) forwardCoalesced(w http.ResponseWriter, r *http.Request, k requestKey, reqCC directives, stale *entry, fwd string) {
	flightKey := r.Method + " " + k.primary + "\n" + k.extra
	fl, leader := h.c.flights.join(flightKey)
	if leader {
		defer h.c.flights.finish(flightKey, fl)
		h.c.metrics.misses.WithLabelValues(h.p.Route).Inc()
		h.forward(w, r, k, reqCC, stale, fwd)
		return
	}

	timer := time.NewTimer(h.p.CoalesceTimeout)
	defer timer.Stop()
	select {
	case <-fl.done:
		e, _ := h.c.store.get(k, r.Header, r.Method == http.MethodHead)
		if e != nil {
			now := h.c.now()
			if evaluate(e, reqCC, now, h.sp.strict).verdict == verdictFresh {
				h.hits.Inc()
				h.c.metrics.coalesced.WithLabelValues(h.p.Route).Inc()
				h.report(w, r, ResultHit)
				h.serveStored(w, r, e, now, cacheStatus{hit: true, collapsed: true})
				return
			}
			stale = e
		}
	case <-timer.C:
	case <-r.Context().Done():
		return
	}
	h.c.metrics.misses.WithLabelValues(h.p.Route).Inc()
	h.forward(w, r, k, reqCC, stale, fwd)
}

// forwardOutcome is the destination forward chose for an upstream response.
type forwardOutcome int

const (
	outcomePassed      forwardOutcome = iota // sent to the client
	outcomeNotModified                       // a 304 to our revalidation
	outcomeStaleError                        // an error hidden by stale-if-error
)

// forward sends r upstream through next and handles the response. With a
// stale entry that has validators, the request is conditional (RFC 9111
// section 4.3.1) and a 304 refreshes the entry (section 4.3.4). Where
// stale-if-error allows it, the stale entry replaces an error response. Any
// other response streams to the client and is stored when it is storable
// and fits.
func (h *handler) forward(w http.ResponseWriter, r *http.Request, k requestKey, reqCC directives, stale *entry, fwd string) {
	out := r.Clone(r.Context())
	stripClientConditionals(out.Header)
	conditional := stale != nil && stale.hasValidator()
	if conditional {
		if etag := stale.header.Get("ETag"); etag != "" {
			out.Header.Set("If-None-Match", etag)
		}
		if lm := stale.header.Get("Last-Modified"); lm != "" {
			out.Header.Set("If-Modified-Since", lm)
		}
	}

	requestTime := h.c.now()
	outcome := outcomePassed
	var respCC directives
	var reason string
	u := &upstreamWriter{client: w, header: http.Header{}, now: h.c.now}
	u.decide = func(status int) {
		respCC = parseResponseCacheControl(u.header, h.sp.targeted)
		if conditional && status == http.StatusNotModified {
			outcome = outcomeNotModified
			return
		}
		if stale != nil && isServerError(status) && staleIfErrorAllowed(stale, reqCC, u.responseTime, h.sp.strict) {
			outcome = outcomeStaleError
			return
		}

		reason = storable(r, reqCC, status, u.header, respCC, h.sp)
		u.limit = h.p.MaxEntrySize - headerSize(u.header) - int64(len(k.primary)+len(k.extra)+entryOverhead)
		tooLarge := u.limit < 0 || (r.Method != http.MethodHead && contentLength(u.header) > u.limit)
		if reason == "" && tooLarge {
			reason = reasonTooLarge
		}
		u.copyBody = reason == ""
		u.toClient = true

		// NOTE: without a Content-Length, "stored" is sent before the body
		// is seen, so a body that turns out larger than the limit is
		// reported as stored but not kept.
		cs := cacheStatus{fwd: fwd, fwdStatus: status, stored: u.copyBody, detail: reason}
		if u.copyBody {
			t := newTiming(u.header, requestTime, u.responseTime)
			lifetime, _ := freshnessLifetime(status, u.header, respCC, t, h.sp.heuristic)
			cs.hasTTL, cs.ttl = true, secondsOf(lifetime-t.correctedInitialAge())
		}
		ch := w.Header()
		for name, values := range u.header {
			ch[name] = values
		}
		ch.Add("Cache-Status", cs.format(h.c.name))
		h.report(w, r, ResultMiss)
		if status == http.StatusOK && hasClientConditional(r.Header) && notModified(r.Header, u.header, u.copyBody) {
			// The client's validator matches, so it gets a 304 while the
			// body still fills the cache.
			u.toClient = false
			writeNotModified(w)
			return
		}
		w.WriteHeader(status)
	}

	h.next.ServeHTTP(u, out)
	u.finish()
	if u.toClient {
		copyTrailers(w.Header(), u.header)
	}

	switch outcome {
	case outcomeNotModified:
		h.finishNotModified(w, r, k, reqCC, stale, u, requestTime, fwd)
	case outcomeStaleError:
		h.c.metrics.revalidations.WithLabelValues(h.p.Route, "error").Inc()
		h.c.metrics.staleServed.WithLabelValues(h.p.Route, "stale_if_error").Inc()
		h.logDebug(r, "served stale on upstream error", slog.Int("status", u.status))
		h.report(w, r, ResultStale)
		h.serveStored(w, r, stale, h.c.now(), cacheStatus{fwd: fwd, fwdStatus: u.status, detail: "stale-if-error"})
	case outcomePassed:
		if conditional {
			result := "modified"
			if isServerError(u.status) {
				result = "error"
			}
			h.c.metrics.revalidations.WithLabelValues(h.p.Route, result).Inc()
		}
		h.storeResponse(r, k, stale, u, requestTime, respCC, reason)
	}
}

// finishNotModified refreshes stale from a 304 and serves the result.
func (h *handler) finishNotModified(w http.ResponseWriter, r *http.Request, k requestKey, reqCC directives, stale *entry, u *upstreamWriter, requestTime time.Time, fwd string) {
	h.c.metrics.revalidations.WithLabelValues(h.p.Route, "not_modified").Inc()

	// RFC 9111 section 4.3.4: a 304 whose strong validator differs from the
	// stored one does not describe this entry, so fetch the full response.
	// The comparison is weak because the compression stage weakens the
	// ETag of the bodies it encodes but may pass a 304's ETag unchanged.
	got, have := u.header.Get("ETag"), stale.header.Get("ETag")
	if strongETag(got) && !weakMatch(got, have) {
		h.c.store.removeEntry(stale)
		h.forward(w, r, k, reqCC, nil, fwd)
		return
	}
	updated := stale.freshen(u.header, requestTime, u.responseTime, h.sp)
	h.storeFreshened(stale, updated)
	if strongETag(got) {
		// A strong validator identifies every stored variant with the same
		// representation, so they are all updated (RFC 9111 section 4.3.4).
		for _, other := range h.c.store.variants(stale.primary) {
			if other != updated && other.header.Get("ETag") == got {
				h.storeFreshened(other, other.freshen(u.header, requestTime, u.responseTime, h.sp))
			}
		}
	}
	if cookies := u.header.Values("Set-Cookie"); len(cookies) > 0 {
		// The cookie was set for this client, so it gets it, but the
		// stored copy never keeps it.
		w.Header()["Set-Cookie"] = cookies
	}
	h.report(w, r, ResultRevalidated)
	h.serveStored(w, r, updated, h.c.now(), cacheStatus{fwd: fwd, fwdStatus: http.StatusNotModified})
}

// storeResponse keeps the response copied by u when it was storable and
// complete, and records why not otherwise.
func (h *handler) storeResponse(r *http.Request, k requestKey, stale *entry, u *upstreamWriter, requestTime time.Time, respCC directives, reason string) {
	body, ok := u.body()
	switch {
	case reason != "":
	case !ok:
		reason = reasonTooLarge
	case r.Method == http.MethodGet && contentLength(u.header) >= 0 && contentLength(u.header) != int64(len(body)):
		reason = reasonIncomplete
	}
	if reason == "" && r.Method == http.MethodHead && u.status == http.StatusOK {
		h.freshenFromHead(r, k, u, requestTime)
	}
	if reason == "" {
		header := storedHeader(u.header, respCC)
		setMissingDate(header, u.header, u.responseTime)
		t := newTiming(u.header, requestTime, u.responseTime)
		e := newEntry(k, r, u.status, header, body, t, h.sp)
		if h.c.store.insert(e) {
			h.c.metrics.stored.WithLabelValues(h.p.Route).Inc()
			return
		}
		reason = reasonTooLarge
	}
	h.c.metrics.notStored.WithLabelValues(h.p.Route, reason).Inc()
	// A newer response that cannot be stored still makes the old entry
	// outdated. Only an error response leaves the old entry in place.
	if stale != nil && u.status < 500 {
		h.c.store.removeEntry(stale)
	}
}

// freshenFromHead applies a storable 200 to HEAD to the stored GET response
// for the same variant (RFC 9111 section 4.3.5). When the validators and
// Content-Length agree, the GET entry is freshened like by a 304. When they
// differ, the GET entry describes an outdated representation and is removed.
func (h *handler) freshenFromHead(r *http.Request, k requestKey, u *upstreamWriter, requestTime time.Time) {
	e, _ := h.c.store.get(k, r.Header, false)
	if e == nil || e.headOnly {
		return
	}
	if !sameRepresentation(e, u.header) {
		h.c.store.removeEntry(e)
		return
	}
	h.storeFreshened(e, e.freshen(u.header, requestTime, u.responseTime, h.sp))
}

// storeFreshened replaces old with its freshened copy updated. When the
// update changed Vary, the request values stored with old no longer
// describe the fields that select it, and "Vary: *" never matches (RFC
// 9111 section 4.1), so old is removed instead.
func (h *handler) storeFreshened(old, updated *entry) {
	if updated.varyChanged() {
		h.c.store.removeEntry(old)
		return
	}
	h.c.store.replace(old, updated)
}

// sameRepresentation reports whether the header of a HEAD response h
// describes the body stored in e: equal entity tags (weakly compared) or,
// without them, equal Last-Modified, and a Content-Length that matches.
func sameRepresentation(e *entry, h http.Header) bool {
	if cl := contentLength(h); cl >= 0 && cl != int64(len(e.body)) {
		return false
	}
	storedTag, headTag := e.header.Get("ETag"), h.Get("ETag")
	if storedTag != "" || headTag != "" {
		return weakMatch(storedTag, headTag)
	}
	return e.header.Get("Last-Modified") == h.Get("Last-Modified")
}

// freshen returns a copy of e updated from the header of a 304 (RFC 9111
// section 4.3.4). Each field of the 304 replaces the stored one, except the
// fields that describe the stored body's framing and coding.
func (e *entry) freshen(h304 http.Header, requestTime, responseTime time.Time, sp storePolicy) *entry {
	header := e.header.Clone()
	for name, values := range storedHeader(h304, parseResponseCacheControl(h304, sp.targeted)) {
		switch name {
		case "Content-Length", "Content-Encoding", "Content-Range", "Transfer-Encoding":
			continue
		}
		header[name] = values
	}
	setMissingDate(header, h304, responseTime)

	// Copy field by field: elem belongs to the store and may change under
	// its lock while this runs.
	n := &entry{
		primary:    e.primary,
		extra:      e.extra,
		headOnly:   e.headOnly,
		status:     e.status,
		header:     header,
		body:       e.body,
		cc:         parseResponseCacheControl(header, sp.targeted),
		timing:     newTiming(h304, requestTime, responseTime),
		varyNames:  e.varyNames,
		varyValues: e.varyValues,
	}
	n.lifetime, _ = freshnessLifetime(n.status, header, n.cc, n.timing, sp.heuristic)
	n.setWire()
	n.size = entrySize(n)
	return n
}

// setMissingDate sets Date in stored to the time received when the response
// header received had none or an invalid one, as RFC 9110 section 6.6.1
// requires of a cache.
func setMissingDate(stored, received http.Header, responseTime time.Time) {
	if _, err := http.ParseTime(received.Get("Date")); err != nil {
		stored.Set("Date", responseTime.UTC().Format(http.TimeFormat))
	}
}

// serveStored writes e as the response to r with Age and a Cache-Status
// member. It sends 304 when the client's validator matches (RFC 9111
// section 4.3.2) and 206 for a Range request.
func (h *handler) serveStored(w http.ResponseWriter, r *http.Request, e *entry, now time.Time, cs cacheStatus) {
	age := e.timing.currentAge(now)
	cs.hasTTL, cs.ttl = true, secondsOf(e.lifetime-age)
	if sw, ok := w.(passthrough.StoredWriter); ok && bodyAllowed(e.status) &&
		!hasClientConditional(r.Header) && len(r.Header["Range"]) == 0 {
		serveWire(sw, r, e, strconv.FormatInt(secondsOf(age), 10), cs.format(h.c.name))
		return
	}
	out := w.Header()
	for name, values := range e.header {
		// The response shares the stored values. No handler changes a
		// value in place, and the capacity limit makes an append copy.
		out[name] = values[:len(values):len(values)]
	}
	out.Set("Age", strconv.FormatInt(secondsOf(age), 10))
	out.Add("Cache-Status", cs.format(h.c.name))

	if e.status == http.StatusOK && hasClientConditional(r.Header) && notModified(r.Header, e.header, true) {
		writeNotModified(w)
		return
	}
	if e.status == http.StatusOK && !e.headOnly && r.Header.Get("Range") != "" {
		// ServeContent serves Range and If-Range requests from the body.
		// An explicit nil Content-Type keeps it from sniffing one.
		if _, ok := out["Content-Type"]; !ok {
			out["Content-Type"] = nil
		}
		lastModified, _ := http.ParseTime(e.header.Get("Last-Modified"))
		http.ServeContent(w, r, "", lastModified, bytes.NewReader(e.body))
		return
	}
	if !e.headOnly && bodyAllowed(e.status) {
		out.Set("Content-Length", strconv.Itoa(len(e.body)))
	}
	w.WriteHeader(e.status)
	if r.Method != http.MethodHead && !e.headOnly {
		_, _ = w.Write(e.body)
	}
}

func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified && status >= 200
}

// gatewayTimeout sends 504 for a request with only-if-cached that the cache
// cannot satisfy (RFC 9111 section 5.2.1.7).
func (h *handler) gatewayTimeout(w http.ResponseWriter, r *http.Request) {
	h.report(w, r, ResultMiss)
	w.Header().Set("Cache-Status", cacheStatus{detail: "only-if-cached"}.format(h.c.name))
	http.Error(w, "no stored response satisfies only-if-cached", http.StatusGatewayTimeout)
}

// forwardUncached passes r to next, only adding a Cache-Status member.
func (h *handler) forwardUncached(w http.ResponseWriter, r *http.Request, fwd string) {
	h.report(w, r, ResultBypass)
	hw := &hookWriter{ResponseWriter: w, onHeader: func(status int, hdr http.Header) {
		hdr.Add("Cache-Status", cacheStatus{fwd: fwd, fwdStatus: status}.format(h.c.name))
	}}
	h.next.ServeHTTP(hw, r)
}

// serveUnsafe forwards a request with an unsafe method and, when it
// succeeds, invalidates the stored responses for its URI and for the
// same-origin Location and Content-Location targets (RFC 9111 section 4.4).
//
// NOTE: a POST response with explicit freshness and a Content-Location equal
// to the target URI is not stored for later GET requests, which RFC 9110
// section 9.3.3 allows.
func (h *handler) serveUnsafe(w http.ResponseWriter, r *http.Request) {
	h.invalidateAfter(w, r, true)
}

// invalidateAfter passes r to next and invalidates when the response status
// is 2xx or 3xx. withStatus adds a Cache-Status member.
func (h *handler) invalidateAfter(w http.ResponseWriter, r *http.Request, withStatus bool) {
	if withStatus {
		h.report(w, r, ResultBypass)
	}
	var status int
	var targets []string
	hw := &hookWriter{ResponseWriter: w, onHeader: func(code int, hdr http.Header) {
		if withStatus {
			hdr.Add("Cache-Status", cacheStatus{fwd: "method", fwdStatus: code}.format(h.c.name))
		}
		status = code
		targets = []string{hdr.Get("Location"), hdr.Get("Content-Location")}
		if code >= 200 && code < 400 {
			h.invalidate(r, targets)
		}
	}}
	h.next.ServeHTTP(hw, r)
	if status >= 200 && status < 400 {
		// Again after the body, for a GET that stored the old response
		// while this request was in flight.
		h.invalidate(r, targets)
	}
}

// invalidate removes the entries for r's URI and for each target URI
// reference that resolves to the same origin.
func (h *handler) invalidate(r *http.Request, targets []string) {
	k := buildKey(r, nil)
	n := h.c.store.remove(k.primary)

	scheme := requestScheme(r)
	base := &url.URL{Scheme: scheme, Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath}
	origin := scheme + "://" + normaliseHost(scheme, r.Host)
	for _, t := range targets {
		if t == "" {
			continue
		}
		ref, err := url.Parse(t)
		if err != nil {
			continue
		}
		abs := base.ResolveReference(ref)
		if abs.Scheme != scheme || scheme+"://"+normaliseHost(abs.Scheme, abs.Host) != origin {
			continue
		}
		n += h.c.store.remove(primaryKey(abs.Scheme, abs.Host, abs.EscapedPath(), abs.RawQuery))
	}
	if n > 0 {
		h.c.metrics.invalidated.Add(float64(n))
	}
}

// refreshInBackground revalidates e once, without a client waiting. A key
// already being refreshed is left alone.
func (h *handler) refreshInBackground(r *http.Request, k requestKey, e *entry) {
	refreshKey := r.Method + " " + k.primary + "\n" + k.extra
	h.c.refreshMu.Lock()
	if h.c.refreshing[refreshKey] {
		h.c.refreshMu.Unlock()
		return
	}
	h.c.refreshing[refreshKey] = true
	h.c.refreshMu.Unlock()

	ctx, cancel := context.WithTimeout(h.c.detach(r.Context()), h.c.refreshTimeout)
	out := r.Clone(ctx)
	stripClientConditionals(out.Header)
	h.c.background.Add(1)
	go func() {
		defer h.c.background.Done()
		defer cancel()
		defer func() {
			h.c.refreshMu.Lock()
			delete(h.c.refreshing, refreshKey)
			h.c.refreshMu.Unlock()
		}()
		defer func() {
			// The upstream handler aborts a broken response body with a
			// panic; here no server would recover it.
			if v := recover(); v != nil {
				if err, ok := v.(error); !ok || !errors.Is(err, http.ErrAbortHandler) {
					h.c.logger.Error("background refresh panicked", "route", h.p.Route, "panic", v)
				}
			}
		}()
		h.forward(&discardWriter{}, out, k, parseRequestCacheControl(out.Header), e, "stale")
	}()
}

// report passes result to the OnResult callback. A background refresh
// writes to a discardWriter and has no client, so it reports nothing.
func (h *handler) report(w http.ResponseWriter, r *http.Request, result string) {
	if h.c.onResult == nil {
		return
	}
	if _, background := w.(*discardWriter); background {
		return
	}
	h.c.onResult(r, result)
}

func (h *handler) logDebug(r *http.Request, msg string, attrs ...slog.Attr) {
	ctx := r.Context()
	if !h.c.logger.Enabled(ctx, slog.LevelDebug) {
		return
	}
	attrs = append(attrs, slog.String("route", h.p.Route), slog.String("host", r.Host),
		slog.String("path", r.URL.Path))
	h.c.logger.LogAttrs(ctx, slog.LevelDebug, msg, attrs...)
}

// RespondFast implements [passthrough.Responder] for the L7 fast path. It
// serves a fresh stored response, as serveCacheable does, and declines
// every request that needs the upstream, a background refresh or a byte
// range.
func (h *handler) RespondFast(w http.ResponseWriter, r *http.Request) bool {
	if bypass(r) || r.Method != http.MethodGet && r.Method != http.MethodHead || first(r.Header, "Range") != "" {
		return false
	}
	reqCC := parseRequestCacheControl(r.Header)
	if reqCC.noStore {
		return false
	}
	e, _ := h.c.store.get(buildKey(r, h.parts), r.Header, r.Method == http.MethodHead)
	if e == nil {
		return false
	}
	now := h.c.now()
	if evaluate(e, reqCC, now, h.sp.strict).verdict != verdictFresh {
		return false
	}
	h.hits.Inc()
	h.report(w, r, ResultHit)
	h.serveStored(w, r, e, now, cacheStatus{hit: true})
	return true
}
