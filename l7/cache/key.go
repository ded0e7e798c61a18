package cache

import (
	"net"
	"net/http"
	"net/textproto"
	"sort"
	"strconv"
	"strings"

	"github.com/tidegate/tidegate/l7/conninfo"
)

// requestKey identifies the stored responses a request may be served from.
type requestKey struct {
	// primary is the method class, scheme, host and normalised path with
	// query: "GET https://example.com:8443/a?b". GET and HEAD share it.
	primary string
	// extra holds the configured extra key parts (header, cookie, client
	// address) as "name=value" lines. Entries match only with equal extra.
	extra string
}

// keyPart is one configured extra key part.
type keyPart struct {
	kind string // "header", "cookie" or "client"
	name string // canonical header name or cookie name
}

// parseKeyParts converts "header:NAME", "cookie:NAME" and "client" into
// key parts. Validation already happened in the config package, so an
// unknown form is skipped.
func parseKeyParts(parts []string) []keyPart {
	var out []keyPart
	for _, p := range parts {
		if p == "client" {
			out = append(out, keyPart{kind: "client"})
			continue
		}
		kind, name, ok := strings.Cut(p, ":")
		if !ok || name == "" {
			continue
		}
		switch kind {
		case "header":
			out = append(out, keyPart{kind: kind, name: textproto.CanonicalMIMEHeaderKey(name)})
		case "cookie":
			out = append(out, keyPart{kind: kind, name: name})
		}
	}
	return out
}

// buildKey computes the key of r. The scheme is https when r arrived over
// TLS.
func buildKey(r *http.Request, parts []keyPart) requestKey {
	return requestKey{
		primary: primaryKey(requestScheme(r), r.Host, r.URL.EscapedPath(), r.URL.RawQuery),
		extra:   extraKey(r, parts),
	}
}

// requestScheme returns https when r arrived over TLS. The L7 listener
// records TLS in conninfo, because r.TLS is nil on HTTP/1.x over TLS once a
// connection wrapper is installed.
func requestScheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	if info := conninfo.FromRequest(r); info != nil && info.TLS {
		return "https"
	}
	return "http"
}

// primaryKey joins the GET method class with a normalised URI.
func primaryKey(scheme, host, escapedPath, rawQuery string) string {
	var b strings.Builder
	b.Grow(len(host) + len(escapedPath) + len(rawQuery) + 16)
	b.WriteString("GET ")
	b.WriteString(scheme)
	b.WriteString("://")
	b.WriteString(normaliseHost(scheme, host))
	b.WriteString(normalisePath(escapedPath))
	if rawQuery != "" {
		b.WriteByte('?')
		b.WriteString(rawQuery)
	}
	return b.String()
}

// normaliseHost lowercases host and drops the port when it is the default
// for scheme.
func normaliseHost(scheme, host string) string {
	host = strings.ToLower(host)
	if !strings.Contains(host, ":") {
		// No port, and SplitHostPort would allocate its error.
		return strings.TrimSuffix(host, ".")
	}
	h, port, err := net.SplitHostPort(host)
	if err != nil {
		return strings.TrimSuffix(host, ".")
	}
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") || port == "" {
		if strings.Contains(h, ":") {
			return "[" + h + "]"
		}
		return strings.TrimSuffix(h, ".")
	}
	return host
}

// normalisePath writes percent-encodings with upper-case hex digits, decodes
// the ones that stand for unreserved characters and escapes a stray '%', so
// that paths RFC 3986 section 6.2.2 calls equivalent share one key.
//
// NOTE: dot segments are kept on purpose. The upstream receives the path as
// sent, and a server that resolves "/a/../b" differently from "/b" would
// otherwise let one client store a response under another path's key. The
// inspect stage normalises paths before they reach the cache.
func normalisePath(p string) string {
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '%' && i+2 < len(p) && isHex(p[i+1]) && isHex(p[i+2]) {
			v := unhex(p[i+1])<<4 | unhex(p[i+2])
			if isUnreserved(v) {
				b.WriteByte(v)
			} else {
				b.WriteByte('%')
				b.WriteByte(upperHex(p[i+1]))
				b.WriteByte(upperHex(p[i+2]))
			}
			i += 2
			continue
		}
		if c == '%' {
			// A stray '%' is escaped so that decoding a neighbour never
			// forms a new escape.
			b.WriteString("%25")
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func upperHex(c byte) byte {
	if 'a' <= c && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}

func isUnreserved(c byte) bool {
	return ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// extraKey renders the configured key parts of r.
func extraKey(r *http.Request, parts []keyPart) string {
	if len(parts) == 0 {
		return ""
	}
	var b strings.Builder
	for _, p := range parts {
		switch p.kind {
		case "header":
			b.WriteString("h:")
			b.WriteString(p.name)
			b.WriteByte('=')
			b.WriteString(strconv.Quote(fieldValue(r.Header, p.name)))
		case "cookie":
			b.WriteString("c:")
			b.WriteString(p.name)
			b.WriteByte('=')
			if c, err := r.Cookie(p.name); err == nil {
				b.WriteString(strconv.Quote(c.Value))
			}
		case "client":
			b.WriteString("a:")
			host, _, err := net.SplitHostPort(r.RemoteAddr)
			if err != nil {
				host = r.RemoteAddr
			}
			b.WriteString(host)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// fieldValue combines every line of field name into one value with
// whitespace around list members removed, so that requests whose fields
// differ only in layout select the same variant (RFC 9111 section 4.1).
func fieldValue(h http.Header, name string) string {
	values := h.Values(name)
	if len(values) == 0 {
		return ""
	}
	if len(values) == 1 && !strings.ContainsAny(values[0], ", \t") {
		return values[0]
	}
	var members []string
	for _, v := range values {
		for _, m := range strings.Split(v, ",") {
			if m = trimOWS(m); m != "" {
				members = append(members, m)
			}
		}
	}
	return strings.Join(members, ",")
}

// varyValue returns the value of field name in the request as a Vary match
// compares it. Accept-Encoding is reduced to the content coding the
// compression stage would choose, so equivalent headers share one variant.
// Accept-Language is lower-cased because language ranges are
// case-insensitive (RFC 4647 section 2.1).
//
// NOTE: the order of Accept-Language members is kept, and so "en, de" and
// "de, en" select different variants. Some servers read the order as a
// preference among equal q-values (RFC 9110 section 12.5.4). The stored
// Content-Language is not matched against q-values either, so
// "fr;q=0.5, de" misses a variant stored for "en, de" even when it is "de".
func varyValue(h http.Header, name string) string {
	switch name {
	case "Accept-Encoding":
		return negotiateEncoding(h)
	case "Accept-Language":
		return strings.ToLower(fieldValue(h, name))
	}
	return fieldValue(h, name)
}

// varyNames returns the canonical, sorted, de-duplicated field names listed
// by Vary in h.
func varyNames(h http.Header) []string {
	names := canonicalFields(h.Values("Vary"))
	if len(names) < 2 {
		return names
	}
	sort.Strings(names)
	out := names[:1]
	for _, n := range names[1:] {
		if n != out[len(out)-1] {
			out = append(out, n)
		}
	}
	return out
}

// codingPreference is the order the compression stage prefers content
// codings in when the client gives them equal weight.
var codingPreference = [...]string{"br", "zstd", "gzip"}

// negotiateEncoding picks the content coding a response to h would use:
// "br", "zstd", "gzip" or "identity". It follows RFC 9110 section 12.5.3:
// the highest q-value wins, "*" stands for codings not listed, and q=0
// excludes a coding.
func negotiateEncoding(h http.Header) string {
	values := h.Values("Accept-Encoding")
	if len(values) == 0 {
		return "identity"
	}
	// weights[i] is the q-value of codingPreference[i], -1 when unlisted.
	weights := [len(codingPreference)]float64{-1, -1, -1}
	star := -1.0
	for _, line := range values {
		for member := range strings.SplitSeq(line, ",") {
			name, q := parseQuality(member)
			if name == "*" {
				star = q
				continue
			}
			for i, coding := range codingPreference {
				if name == coding && weights[i] < 0 {
					weights[i] = q
				}
			}
		}
	}
	best, bestQ := "identity", 0.0
	for i, coding := range codingPreference {
		q := weights[i]
		if q < 0 {
			q = star
		}
		if q > bestQ {
			best, bestQ = coding, q
		}
	}
	return best
}

// parseQuality splits "gzip;q=0.5" into a lower-case coding and its weight.
// A missing or invalid q-value counts as 1, and an out-of-range one as 0.
func parseQuality(member string) (string, float64) {
	name, params, _ := strings.Cut(member, ";")
	name = strings.ToLower(trimOWS(name))
	if name == "x-gzip" {
		name = "gzip"
	}
	q := 1.0
	for p := range strings.SplitSeq(params, ";") {
		k, v, ok := strings.Cut(trimOWS(p), "=")
		if !ok || !strings.EqualFold(trimOWS(k), "q") {
			continue
		}
		f, err := strconv.ParseFloat(trimOWS(v), 64)
		switch {
		case err != nil:
		case f < 0 || f > 1:
			q = 0
		default:
			q = f
		}
	}
	return name, q
}
