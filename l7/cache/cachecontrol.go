package cache

import (
	"net/http"
	"net/textproto"
	"strings"
)

// maxDelta is the value RFC 9111 section 1.2.2 requires a cache to use for
// a delta-seconds value larger than it can represent: 2^31 seconds.
const maxDelta = 1 << 31

// delta is one delta-seconds argument of a Cache-Control directive or of the
// Age field.
type delta struct {
	present bool  // the directive appeared
	valid   bool  // its argument was 1*DIGIT (quoted or not)
	secs    int64 // seconds, clamped to maxDelta, when valid
}

// directives is a parsed Cache-Control field. Duplicate directives keep the
// first occurrence, as RFC 9111 section 4.2.1 allows.
type directives struct {
	maxAge               delta
	sMaxAge              delta
	maxStale             delta // present and !valid with no argument means any staleness
	minFresh             delta
	staleWhileRevalidate delta
	staleIfError         delta

	noStore         bool
	noCache         bool
	noCacheFields   []string // qualified no-cache field names, canonical
	private         bool
	privateFields   []string // qualified private field names, canonical
	public          bool
	mustRevalidate  bool
	proxyRevalidate bool
	mustUnderstand  bool
	onlyIfCached    bool
	noTransform     bool
	immutable       bool
	maxStaleAny     bool // max-stale without an argument

	// targeted is set when the directives come from CDN-Cache-Control,
	// which makes the cache ignore Expires too (RFC 9213 section 2.2).
	targeted bool
}

// parseCacheControl parses every Cache-Control field line in h. Unknown
// directives are ignored (RFC 9111 section 5.2.3). A malformed member is
// skipped without affecting the others.
func parseCacheControl(h http.Header) directives {
	var d directives
	for _, line := range h.Values("Cache-Control") {
		parseDirectiveList(line, &d)
	}
	return d
}

// parseRequestCacheControl parses the request's Cache-Control. A request
// without one that sends the HTTP/1.0 "Pragma: no-cache" gets no-cache, as
// RFC 7234 section 5.4 required; RFC 9111 deprecates Pragma but the reading
// only makes the cache more careful.
func parseRequestCacheControl(h http.Header) directives {
	if len(h.Values("Cache-Control")) > 0 {
		return parseCacheControl(h)
	}
	var d directives
	for _, line := range h.Values("Pragma") {
		for member := range strings.SplitSeq(line, ",") {
			if strings.EqualFold(trimOWS(member), "no-cache") {
				d.noCache = true
			}
		}
	}
	return d
}

func parseDirectiveList(s string, d *directives) {
	for len(s) > 0 {
		var name, arg string
		var hasArg bool
		name, arg, hasArg, s = nextDirective(s)
		if name == "" {
			continue
		}
		applyDirective(d, strings.ToLower(name), arg, hasArg)
	}
}

// nextDirective splits the first list member off s. It returns the
// directive name, its argument with any quoting removed, whether an "=" was
// present, and the rest of s after the comma that ends the member.
func nextDirective(s string) (name, arg string, hasArg bool, rest string) {
	s = trimOWS(s)
	i := 0
	for i < len(s) && isTokenChar(s[i]) {
		i++
	}
	name = s[:i]
	s = trimOWS(s[i:])

	if s == "" {
		return name, "", false, ""
	}
	if s[0] == ',' {
		return name, "", false, s[1:]
	}
	if s[0] != '=' {
		// Not a directive: drop everything up to the next comma.
		return "", "", false, skipMember(s)
	}

	hasArg = true
	s = trimOWS(s[1:])
	if s != "" && s[0] == '"' {
		var ok bool
		arg, s, ok = readQuoted(s)
		if !ok {
			return "", "", false, ""
		}
	} else {
		j := 0
		for j < len(s) && isTokenChar(s[j]) {
			j++
		}
		arg, s = s[:j], s[j:]
	}

	s = trimOWS(s)
	if s != "" && s[0] != ',' {
		return "", "", false, skipMember(s)
	}
	if s != "" {
		s = s[1:]
	}
	return name, arg, hasArg, s
}

// readQuoted reads a quoted-string at the start of s and returns its
// unescaped content and the rest of s. ok is false when the closing quote is
// missing.
func readQuoted(s string) (content, rest string, ok bool) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			if i+1 < len(s) {
				i++
				b.WriteByte(s[i])
			}
		case '"':
			return b.String(), s[i+1:], true
		default:
			b.WriteByte(c)
		}
	}
	return "", "", false
}

// skipMember returns s after the next comma that is not inside a
// quoted-string.
func skipMember(s string) string {
	inQuote := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if inQuote {
				i++
			}
		case '"':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				return s[i+1:]
			}
		}
	}
	return ""
}

func applyDirective(d *directives, name, arg string, hasArg bool) {
	switch name {
	case "max-age":
		setDelta(&d.maxAge, arg, hasArg)
	case "s-maxage":
		setDelta(&d.sMaxAge, arg, hasArg)
	case "max-stale":
		if !d.maxStale.present && !hasArg {
			d.maxStaleAny = true
		}
		setDelta(&d.maxStale, arg, hasArg)
	case "min-fresh":
		setDelta(&d.minFresh, arg, hasArg)
	case "stale-while-revalidate":
		setDelta(&d.staleWhileRevalidate, arg, hasArg)
	case "stale-if-error":
		setDelta(&d.staleIfError, arg, hasArg)
	case "no-store":
		d.noStore = true
	case "no-cache":
		d.noCache = true
		if hasArg {
			d.noCacheFields = append(d.noCacheFields, fieldNames(arg)...)
		}
	case "private":
		d.private = true
		if hasArg {
			d.privateFields = append(d.privateFields, fieldNames(arg)...)
		}
	case "public":
		d.public = true
	case "must-revalidate":
		d.mustRevalidate = true
	case "proxy-revalidate":
		d.proxyRevalidate = true
	case "must-understand":
		d.mustUnderstand = true
	case "only-if-cached":
		d.onlyIfCached = true
	case "no-transform":
		d.noTransform = true
	case "immutable":
		d.immutable = true
	}
}

// setDelta records the first occurrence of a delta-seconds directive.
func setDelta(dst *delta, arg string, hasArg bool) {
	if dst.present {
		return
	}
	dst.present = true
	if !hasArg {
		return
	}
	dst.secs, dst.valid = parseDeltaSeconds(arg)
}

// parseDeltaSeconds parses 1*DIGIT, clamping values above 2^31 to 2^31 as
// RFC 9111 section 1.2.2 requires.
func parseDeltaSeconds(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if n < maxDelta {
			n = n*10 + int64(c-'0')
		}
	}
	return min(n, maxDelta), true
}

// fieldNames splits the argument of a qualified no-cache or private
// directive into canonical field names, skipping members that are not
// tokens.
func fieldNames(arg string) []string {
	var names []string
	for _, f := range strings.Split(arg, ",") {
		if f = trimOWS(f); isToken(f) {
			names = append(names, textproto.CanonicalMIMEHeaderKey(f))
		}
	}
	return names
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

// parseAge parses the Age field. An Age with several lines or list members
// uses the first, and an invalid Age is ignored (treated as absent).
func parseAge(h http.Header) int64 {
	v := h.Get("Age")
	if v == "" {
		return 0
	}
	if i := strings.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	n, ok := parseDeltaSeconds(trimOWS(v))
	if !ok {
		return 0
	}
	return n
}

func trimOWS(s string) string {
	return strings.Trim(s, " \t")
}

// isTokenChar reports whether b may appear in an HTTP token (RFC 9110
// section 5.6.2).
func isTokenChar(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0
}
