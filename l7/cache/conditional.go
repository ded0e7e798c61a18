package cache

import (
	"net/http"
	"strings"
	"time"
)

// notModified evaluates the client's If-None-Match or If-Modified-Since
// against the response header h, following RFC 9110 section 13.2.2:
// If-None-Match takes precedence, and If-Modified-Since compares with
// Last-Modified. For a stored response, dateFallback compares with Date
// when Last-Modified is missing (RFC 9111 section 4.3.2).
func notModified(req http.Header, h http.Header, dateFallback bool) bool {
	if inm := req.Values("If-None-Match"); len(inm) > 0 {
		etag := h.Get("ETag")
		for _, line := range inm {
			if etagListMatches(line, etag) {
				return true
			}
		}
		return false
	}
	ims := req.Get("If-Modified-Since")
	if ims == "" {
		return false
	}
	since, err := http.ParseTime(ims)
	if err != nil {
		return false
	}
	lm := h.Get("Last-Modified")
	if lm == "" && dateFallback {
		lm = h.Get("Date")
	}
	modified, err := http.ParseTime(lm)
	if err != nil {
		return false
	}
	return !modified.After(since)
}

// hasClientConditional reports whether req carries a validator that the
// cache evaluates itself.
func hasClientConditional(req http.Header) bool {
	return first(req, "If-None-Match") != "" || first(req, "If-Modified-Since") != ""
}

// etagListMatches reports whether the If-None-Match list contains an
// entity tag weakly equal to etag, or "*" while a representation exists
// (RFC 9110 section 13.1.2).
func etagListMatches(list, etag string) bool {
	if trimOWS(list) == "*" {
		return true
	}
	if etag == "" {
		return false
	}
	for list != "" {
		var tag string
		tag, list = nextETag(list)
		if tag != "" && weakMatch(tag, etag) {
			return true
		}
	}
	return false
}

// nextETag splits the first entity tag off a comma-separated list. Commas
// inside the quotes of an entity tag are part of it.
func nextETag(s string) (tag, rest string) {
	s = strings.TrimLeft(s, " \t,")
	start := 0
	if strings.HasPrefix(s, "W/") {
		start = 2
	}
	if start >= len(s) || s[start] != '"' {
		// Not an entity tag: skip to the next comma.
		if i := strings.IndexByte(s, ','); i >= 0 {
			return "", s[i+1:]
		}
		return "", ""
	}
	end := strings.IndexByte(s[start+1:], '"')
	if end < 0 {
		return "", ""
	}
	end += start + 2
	return s[:end], s[end:]
}

// weakMatch compares two entity tags with the weak comparison function.
func weakMatch(a, b string) bool {
	return strings.TrimPrefix(trimOWS(a), "W/") == strings.TrimPrefix(trimOWS(b), "W/")
}

// strongETag reports whether etag is a strong validator.
func strongETag(etag string) bool {
	return etag != "" && !strings.HasPrefix(etag, "W/")
}

// fieldsOf304 lists what a 304 carries besides Age and Cache-Status (RFC 9110
// section 15.4.5): the fields a 200 would have sent that guide caches, but
// no other representation metadata.
var fieldsOf304 = map[string]bool{
	"Cache-Control": true, "Content-Location": true, "Date": true, "Etag": true,
	"Expires": true, "Vary": true, "Last-Modified": true,
}

// writeNotModified sends 304 with the fields already in w's header, minus
// the representation metadata RFC 9110 section 15.4.5 leaves out. Other
// fields stay, so a Set-Cookie meant for this client still reaches it.
func writeNotModified(w http.ResponseWriter) {
	h := w.Header()
	for k := range h {
		if strings.HasPrefix(k, "Content-") && !fieldsOf304[k] {
			delete(h, k)
		}
	}
	w.WriteHeader(http.StatusNotModified)
}

// stripClientConditionals removes the validators the cache evaluates itself
// so that the upstream sends a full, storable response.
func stripClientConditionals(h http.Header) {
	h.Del("If-None-Match")
	h.Del("If-Modified-Since")
}

func secondsOf(d time.Duration) int64 {
	return int64(d / time.Second)
}
