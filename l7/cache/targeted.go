package cache

import (
	"net/http"
	"strconv"

	"github.com/dunglas/httpsfv"
)

// cdnCacheControl is the CDN-Cache-Control field of RFC 9213 section 3,
// in the canonical form of its name.
const cdnCacheControl = "Cdn-Cache-Control"

// parseResponseCacheControl parses the directives that decide whether a
// response is stored and for how long. When targeted is set, the cache
// acts as the edge cache of the site it fronts, and a valid, non-empty
// CDN-Cache-Control takes the place of Cache-Control and Expires (RFC 9213
// section 2.2). Both fields still reach the client as the upstream sent
// them.
func parseResponseCacheControl(h http.Header, targeted bool) directives {
	if lines := h[cdnCacheControl]; targeted && len(lines) > 0 {
		if d, ok := parseTargeted(lines); ok {
			return d
		}
	}
	return parseCacheControl(h)
}

// parseTargeted parses the lines of a targeted field, a Structured Fields
// Dictionary (RFC 8941 section 3.2) of Cache-Control directives. It reports
// false for a field that does not parse, has no members or gives a
// delta-seconds directive a value that is not an Integer: RFC 9213 section
// 2.2 has a cache ignore such a field.
func parseTargeted(lines []string) (directives, bool) {
	dict, err := httpsfv.UnmarshalDictionary(lines)
	if err != nil || len(dict.Names()) == 0 {
		return directives{}, false
	}
	d := directives{targeted: true}
	for _, name := range dict.Names() {
		member, _ := dict.Get(name)
		item, ok := member.(httpsfv.Item)
		if _, isInt := item.Value.(int64); isDeltaDirective(name) && !isInt {
			return directives{}, false
		}
		if !ok {
			// An Inner List cannot be a Cache-Control argument, so the
			// directive is unknown and ignored (RFC 9111 section 5.2.3).
			continue
		}
		switch v := item.Value.(type) {
		case bool:
			if v {
				applyDirective(&d, name, "", false)
			}
		case int64:
			applyDirective(&d, name, strconv.FormatInt(v, 10), true)
		case string:
			applyDirective(&d, name, v, true)
		case httpsfv.Token:
			applyDirective(&d, name, string(v), true)
		}
	}
	return d, true
}

// isDeltaDirective reports whether a response directive takes a
// delta-seconds argument.
func isDeltaDirective(name string) bool {
	switch name {
	case "max-age", "s-maxage", "stale-while-revalidate", "stale-if-error":
		return true
	}
	return false
}
