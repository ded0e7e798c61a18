package compress

import (
	"strings"
)

// Negotiate picks the response encoding from the request's Accept-Encoding
// field values and the server's preference order (RFC 9110 section 12.5.3).
// The acceptable coding with the highest q-value wins, and ties go to the
// earlier entry of prefs. "*" sets the q-value of codings not listed, q=0
// excludes a coding, "x-gzip" counts as "gzip", and elements with an
// invalid q-value are ignored. It returns "" when the response should stay
// unencoded, including when no Accept-Encoding field was sent.
func Negotiate(acceptEncoding []string, prefs []string) string {
	if len(acceptEncoding) == 0 {
		return ""
	}
	const unset = -1
	wildcard := unset
	qs := make(map[string]int, 4)
	for _, field := range acceptEncoding {
		for elem := range strings.SplitSeq(field, ",") {
			coding, q, ok := parseElement(elem)
			if !ok {
				continue
			}
			if coding == "*" {
				wildcard = q
				continue
			}
			if coding == "x-gzip" {
				coding = "gzip"
			}
			// When a coding repeats, the last value counts.
			qs[coding] = q
		}
	}

	best, bestQ := "", 0
	for _, p := range prefs {
		q, listed := qs[p]
		if !listed {
			q = wildcard
		}
		if q > bestQ {
			best, bestQ = p, q
		}
	}
	return best
}

// parseElement parses one "coding;q=0.5" element into the lower-case coding
// and its q-value in thousandths (1000 when absent).
func parseElement(elem string) (string, int, bool) {
	coding, params, _ := strings.Cut(elem, ";")
	coding = strings.ToLower(strings.Trim(coding, " \t"))
	if coding == "" {
		return "", 0, false
	}
	q := 1000
	for param := range strings.SplitSeq(params, ";") {
		param = strings.Trim(param, " \t")
		if param == "" {
			continue
		}
		name, value, ok := strings.Cut(param, "=")
		if !ok || !strings.EqualFold(strings.TrimRight(name, " \t"), "q") {
			continue
		}
		v, ok := parseQValue(strings.TrimLeft(value, " \t"))
		if !ok {
			return "", 0, false
		}
		q = v
	}
	return coding, q, true
}

// parseQValue parses an RFC 9110 qvalue: "0" or "1" optionally followed by
// a dot and up to three digits, at most 1.
func parseQValue(s string) (int, bool) {
	if s == "" || len(s) > 5 || (s[0] != '0' && s[0] != '1') {
		return 0, false
	}
	v := int(s[0]-'0') * 1000
	if len(s) > 1 {
		if s[1] != '.' {
			return 0, false
		}
		scale := 100
		for _, c := range s[2:] {
			if c < '0' || c > '9' {
				return 0, false
			}
			v += int(c-'0') * scale
			scale /= 10
		}
	}
	if v > 1000 {
		return 0, false
	}
	return v, true
}
