package cache

import (
	"net/http"
	"net/textproto"
	"strings"
)

// Reasons a response is not stored. Each one appears as the detail of the
// Cache-Status field and as the reason label of the not-stored metric.
const (
	reasonMethod             = "method"
	reasonStatus             = "status"
	reasonPartial            = "partial-content"
	reasonRequestNoStore     = "request-no-store"
	reasonNoStore            = "no-store"
	reasonMustUnderstand     = "must-understand"
	reasonPrivate            = "private"
	reasonAuthorization      = "authorization"
	reasonSetCookie          = "set-cookie"
	reasonVaryStar           = "vary-star"
	reasonTrailers           = "trailers"
	reasonNoFreshness        = "no-freshness-or-validator"
	reasonTooLarge           = "too-large"
	reasonIncomplete         = "incomplete"
	reasonNoCacheNoValidator = "no-cache-without-validator"
)

// storePolicy is the part of a route's policy that decides storability.
type storePolicy struct {
	strict         bool
	storeSetCookie bool
	heuristic      bool
	// targeted makes CDN-Cache-Control replace Cache-Control and Expires.
	targeted bool
}

// storable decides whether a shared cache may store the response (status,
// h, cc) to req, following RFC 9111 section 3. It returns "" when the
// response may be stored, or the reason it may not.
func storable(req *http.Request, reqCC directives, status int, h http.Header, cc directives, p storePolicy) string {
	// Section 3: the request method must be understood and cacheable.
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return reasonMethod
	}
	// Section 3.3 and 3.4: this cache does not combine partial content,
	// and a 304 only updates entries. A 416 is the response to the
	// request's Range, which the key does not contain. Content-Range on any
	// other status has no meaning (RFC 9110 section 14.4) and is stored like
	// other fields.
	// NOTE: a 206 is never stored, so Range requests for a URI with no
	// stored 200 all go to the upstream, though section 3.3 allows storing
	// them.
	if status == http.StatusPartialContent || status == http.StatusRequestedRangeNotSatisfiable {
		return reasonPartial
	}
	if status < 200 || status == http.StatusNotModified {
		return reasonStatus
	}
	// Section 5.2.1.5: no-store in the request covers its response too.
	if reqCC.noStore {
		return reasonRequestNoStore
	}
	// Section 5.2.2.3: a cache that understands the status code ignores
	// no-store when must-understand is present, and stores nothing else.
	if cc.mustUnderstand {
		if !understoodStatus(status) {
			return reasonMustUnderstand
		}
	} else if cc.noStore {
		return reasonNoStore
	}
	// Section 5.2.2.7: an unqualified private forbids a shared cache from
	// storing; a qualified one only keeps the named fields out of storage.
	if cc.private && len(cc.privateFields) == 0 && p.strict {
		return reasonPrivate
	}
	// Section 3.5: a response to a request with Authorization is stored
	// only when the response explicitly allows it.
	if req.Header.Get("Authorization") != "" && !(cc.public || cc.sMaxAge.present || cc.mustRevalidate) {
		return reasonAuthorization
	}
	// NOTE: RFC 9111 section 3 lets a shared cache store a response with
	// Set-Cookie. A route stores one only with store_set_cookie, because
	// the body may have been made for the one client that gets the cookie.
	if len(h.Values("Set-Cookie")) > 0 && !p.storeSetCookie {
		return reasonSetCookie
	}
	// Section 4.1: a stored "Vary: *" response can never be reused.
	if varyStar(h) {
		return reasonVaryStar
	}
	if h.Get("Trailer") != "" {
		return reasonTrailers
	}
	// Section 3: the response needs explicit freshness, public, or a status
	// code that is cacheable by default.
	explicit := cc.public || cc.maxAge.present || cc.sMaxAge.present || len(h.Values("Expires")) > 0 && !cc.targeted
	if !explicit && !heuristicallyCacheable(status) {
		return reasonStatus
	}

	// A cache is never required to store. Skip responses that could never
	// be reused: no freshness, nothing to revalidate with, no stale use.
	validator := h.Get("ETag") != "" || h.Get("Last-Modified") != ""
	if cc.noCache && p.strict && !validator {
		return reasonNoCacheNoValidator
	}
	lifetime, _ := freshnessLifetime(status, h, cc, timing{}, p.heuristic)
	if !explicit && lifetime == 0 && !validator && !cc.staleIfError.valid && !cc.staleWhileRevalidate.valid {
		return reasonNoFreshness
	}
	return ""
}

// understoodStatus reports whether this cache implements the caching rules
// for status, as must-understand requires (RFC 9111 section 5.2.2.3).
func understoodStatus(status int) bool {
	switch status {
	case 200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

// varyStar reports whether the Vary field contains "*".
func varyStar(h http.Header) bool {
	for _, line := range h.Values("Vary") {
		for _, f := range strings.Split(line, ",") {
			if trimOWS(f) == "*" {
				return true
			}
		}
	}
	return false
}

// hopByHop lists fields that describe one connection or one proxy hop and
// are never stored (RFC 9111 section 3.1, RFC 9110 section 7.6.1).
var hopByHop = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Transfer-Encoding", "Upgrade", "Trailer",
	"Proxy-Authenticate", "Proxy-Authentication-Info", "Proxy-Authorization",
}

// storedHeader returns a copy of h without the fields a shared cache must
// not keep or serve to other clients. These are hop-by-hop fields, fields
// named in Connection or by a qualified private directive, and Set-Cookie.
// Age is dropped too because it is computed again when serving.
func storedHeader(h http.Header, cc directives) http.Header {
	out := h.Clone()
	for _, line := range h.Values("Connection") {
		for _, f := range strings.Split(line, ",") {
			if f = trimOWS(f); f != "" {
				out.Del(f)
			}
		}
	}
	for _, f := range hopByHop {
		out.Del(f)
	}
	for _, f := range cc.privateFields {
		out.Del(f)
	}
	// One client's cookie must never reach another (see storable).
	out.Del("Set-Cookie")
	out.Del("Set-Cookie2")
	out.Del("Age")
	return out
}

// canonicalFields splits a comma-separated list of field names.
func canonicalFields(lines []string) []string {
	var names []string
	for _, line := range lines {
		for _, f := range strings.Split(line, ",") {
			if f = trimOWS(f); f != "" {
				names = append(names, textproto.CanonicalMIMEHeaderKey(f))
			}
		}
	}
	return names
}
