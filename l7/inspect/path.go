package inspect

import (
	"errors"
	"strings"
)

// Path normalisation errors. Each makes the request a 400.
var (
	ErrEncodedSlash = errors.New("inspect: path contains an encoded slash")
	ErrAboveRoot    = errors.New("inspect: path climbs above the root")
	ErrBadEscape    = errors.New("inspect: path contains an invalid percent-encoding")
	ErrEncodedNUL   = errors.New("inspect: path contains an encoded NUL")
	ErrNotAbsolute  = errors.New("inspect: path does not start with /")
)

// NormalizePath returns the escaped path p in normal form: percent-encoded
// unreserved characters (RFC 3986 ALPHA, DIGIT, "-", ".", "_", "~") decoded,
// other escapes kept with upper-case hex digits, repeated slashes merged and
// "." and ".." segments resolved. A trailing slash is kept, and a path
// ending in "." or ".." gets one. An encoded slash, an encoded NUL, a broken
// escape or a ".." above the root is an error, because backends disagree on
// what they mean.
func NormalizePath(p string) (string, error) {
	if p == "" || p[0] != '/' {
		return "", ErrNotAbsolute
	}
	decoded, err := decodeUnreserved(p)
	if err != nil {
		return "", err
	}

	segments := make([]string, 0, strings.Count(decoded, "/"))
	trailingSlash := false
	for seg := range strings.SplitSeq(decoded[1:], "/") {
		trailingSlash = false
		switch seg {
		case "":
			trailingSlash = true
		case ".":
			trailingSlash = true
		case "..":
			if len(segments) == 0 {
				return "", ErrAboveRoot
			}
			segments = segments[:len(segments)-1]
			trailingSlash = true
		default:
			segments = append(segments, seg)
		}
	}

	var b strings.Builder
	b.Grow(len(decoded))
	for _, seg := range segments {
		b.WriteByte('/')
		b.WriteString(seg)
	}
	if b.Len() == 0 || trailingSlash {
		b.WriteByte('/')
	}
	return b.String(), nil
}

// decodeUnreserved decodes escapes of unreserved characters and upper-cases
// the hex digits of the others.
func decodeUnreserved(p string) (string, error) {
	if strings.IndexByte(p, '%') < 0 {
		return p, nil
	}
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		if p[i] != '%' {
			b.WriteByte(p[i])
			continue
		}
		if i+2 >= len(p) {
			return "", ErrBadEscape
		}
		hi, ok1 := hexValue(p[i+1])
		lo, ok2 := hexValue(p[i+2])
		if !ok1 || !ok2 {
			return "", ErrBadEscape
		}
		c := hi<<4 | lo
		switch {
		case c == '/':
			return "", ErrEncodedSlash
		case c == 0:
			return "", ErrEncodedNUL
		case isUnreserved(c):
			b.WriteByte(c)
		default:
			const hexDigits = "0123456789ABCDEF"
			b.WriteByte('%')
			b.WriteByte(hexDigits[hi])
			b.WriteByte(hexDigits[lo])
		}
		i += 2
	}
	return b.String(), nil
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}
