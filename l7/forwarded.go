package l7

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ForwardedElement is one element of an RFC 7239 Forwarded header: the
// parameters one proxy added. Values are unquoted.
type ForwardedElement struct {
	For   string
	By    string
	Host  string
	Proto string
}

// maxForwardedElements bounds how many hops of a trusted sender's Forwarded
// header are kept, so a long chain cannot grow every request without limit.
const maxForwardedElements = 32

// ParseForwarded parses the value of one or more Forwarded header fields
// (joined with commas) as RFC 7239 section 4 defines it. Parameter names are
// case-insensitive and values are tokens or quoted strings. A parameter
// repeated within one element is an error, and unknown parameters are
// skipped.
func ParseForwarded(v string) ([]ForwardedElement, error) {
	var out []ForwardedElement
	p := forwardedParser{s: v}
	for {
		p.skipSpace()
		if p.done() {
			break
		}
		el, err := p.element()
		if err != nil {
			return nil, err
		}
		out = append(out, el)
		if len(out) > maxForwardedElements {
			return nil, fmt.Errorf("forwarded: more than %d elements", maxForwardedElements)
		}
		p.skipSpace()
		if p.done() {
			break
		}
		if p.s[p.i] != ',' {
			return nil, fmt.Errorf("forwarded: unexpected %q at offset %d", p.s[p.i], p.i)
		}
		p.i++
	}
	if len(out) == 0 {
		return nil, errors.New("forwarded: empty")
	}
	return out, nil
}

type forwardedParser struct {
	s string
	i int
}

func (p *forwardedParser) done() bool { return p.i >= len(p.s) }

func (p *forwardedParser) skipSpace() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *forwardedParser) element() (ForwardedElement, error) {
	var el ForwardedElement
	seen := map[string]bool{}
	for {
		p.skipSpace()
		name := p.token()
		if name == "" {
			return el, fmt.Errorf("forwarded: expected a parameter name at offset %d", p.i)
		}
		if p.done() || p.s[p.i] != '=' {
			return el, fmt.Errorf("forwarded: parameter %q has no value", name)
		}
		p.i++
		value, err := p.value()
		if err != nil {
			return el, err
		}
		name = strings.ToLower(name)
		if seen[name] {
			return el, fmt.Errorf("forwarded: parameter %q repeated in one element", name)
		}
		seen[name] = true
		switch name {
		case "for":
			el.For = value
		case "by":
			el.By = value
		case "host":
			el.Host = value
		case "proto":
			el.Proto = value
		}
		p.skipSpace()
		if p.done() || p.s[p.i] != ';' {
			return el, nil
		}
		p.i++
	}
}

func (p *forwardedParser) token() string {
	start := p.i
	for p.i < len(p.s) && isTokenChar(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i]
}

func (p *forwardedParser) value() (string, error) {
	if p.done() {
		return "", errors.New("forwarded: missing value at end of input")
	}
	if p.s[p.i] != '"' {
		v := p.token()
		if v == "" {
			return "", fmt.Errorf("forwarded: invalid value at offset %d", p.i)
		}
		return v, nil
	}
	p.i++
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return b.String(), nil
		case c == '\\':
			if p.i+1 >= len(p.s) {
				return "", errors.New("forwarded: unterminated quoted-pair")
			}
			if q := p.s[p.i+1]; q < 0x20 && q != '\t' || q == 0x7f {
				return "", fmt.Errorf("forwarded: control character in quoted-pair at offset %d", p.i+1)
			}
			b.WriteByte(p.s[p.i+1])
			p.i += 2
		case c < 0x20 && c != '\t' || c == 0x7f:
			return "", fmt.Errorf("forwarded: control character in quoted string at offset %d", p.i)
		default:
			b.WriteByte(c)
			p.i++
		}
	}
	return "", errors.New("forwarded: unterminated quoted string")
}

// isTokenChar reports whether c is a tchar of RFC 9110 section 5.6.2.
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// String formats el as one Forwarded element, quoting values that are not
// tokens (IPv6 nodes, ports, obfuscated names).
func (el ForwardedElement) String() string {
	return string(el.appendTo(nil))
}

// appendTo appends el as one Forwarded element to b.
func (el ForwardedElement) appendTo(b []byte) []byte {
	start := len(b)
	add := func(name, v string) {
		if v == "" {
			return
		}
		if len(b) > start {
			b = append(b, ';')
		}
		b = append(b, name...)
		b = append(b, '=')
		b = appendForwardedValue(b, v)
	}
	add("for", el.For)
	add("by", el.By)
	add("host", el.Host)
	add("proto", el.Proto)
	return b
}

// appendForwardedValue appends v as a token when it is one and as a quoted
// string otherwise.
func appendForwardedValue(b []byte, v string) []byte {
	token := v != ""
	for i := 0; i < len(v); i++ {
		if !isTokenChar(v[i]) {
			token = false
			break
		}
	}
	if token {
		return append(b, v...)
	}
	b = append(b, '"')
	for i := 0; i < len(v); i++ {
		if v[i] == '"' || v[i] == '\\' {
			b = append(b, '\\')
		}
		b = append(b, v[i])
	}
	return append(b, '"')
}

// FormatForwarded joins elements into one Forwarded header value. Elements
// without a known parameter (only extensions, which ParseForwarded drops)
// are left out, since an empty element is not valid syntax.
func FormatForwarded(els []ForwardedElement) string {
	if len(els) == 1 {
		return els[0].String()
	}
	parts := make([]string, 0, len(els))
	for _, el := range els {
		if s := el.String(); s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, ", ")
}

// forwardedNode formats a client address as a Forwarded node: IPv6
// addresses in brackets (RFC 7239 section 6), which forces quoting.
func forwardedNode(a netip.Addr) string {
	if a.Is6() && !a.Is4In6() {
		return "[" + a.String() + "]"
	}
	return a.Unmap().String()
}

// validXFF reports whether an inbound X-Forwarded-For value is a
// comma-separated list of IP addresses, the only form kept from a trusted
// sender.
func validXFF(v string) bool {
	if v == "" {
		return false
	}
	for part := range strings.SplitSeq(v, ",") {
		if _, err := netip.ParseAddr(strings.TrimSpace(part)); err != nil {
			return false
		}
	}
	return true
}

// validPort reports whether v is a decimal TCP port.
func validPort(v string) bool {
	n, err := strconv.ParseUint(v, 10, 16)
	return err == nil && n > 0
}
