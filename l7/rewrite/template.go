package rewrite

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/tidegate/tidegate/shared/config"
)

// template is a header or redirect value with ${variable} references,
// parsed once at construction.
type template struct {
	parts []templatePart
}

type templatePart struct {
	literal  string
	variable string // set for a variable reference, literal is then ""
}

func parseTemplate(s string) (template, error) {
	names, err := config.TemplateVariables(s)
	if err != nil {
		return template{}, err
	}
	var t template
	var lit strings.Builder
	next := 0
	for i := 0; i < len(s); i++ {
		if s[i] != '$' {
			lit.WriteByte(s[i])
			continue
		}
		if s[i+1] == '$' {
			lit.WriteByte('$')
			i++
			continue
		}
		end := strings.IndexByte(s[i:], '}')
		if lit.Len() > 0 {
			t.parts = append(t.parts, templatePart{literal: lit.String()})
			lit.Reset()
		}
		t.parts = append(t.parts, templatePart{variable: names[next]})
		next++
		i += end
	}
	if lit.Len() > 0 {
		t.parts = append(t.parts, templatePart{literal: lit.String()})
	}
	return t, nil
}

// constant reports whether the template has no variables, and its value.
func (t template) constant() (string, bool) {
	switch {
	case len(t.parts) == 0:
		return "", true
	case len(t.parts) == 1 && t.parts[0].variable == "":
		return t.parts[0].literal, true
	}
	return "", false
}

// vars computes variable values of one request.
type vars struct {
	r    *http.Request
	opts *Options
}

func (t template) expand(v vars) string {
	if s, ok := t.constant(); ok {
		return s
	}
	var b strings.Builder
	for _, p := range t.parts {
		if p.variable == "" {
			b.WriteString(p.literal)
			continue
		}
		b.WriteString(sanitize(v.value(p.variable)))
	}
	return b.String()
}

// sanitize drops characters that could end a header line, since values
// such as the Host come from the client.
func sanitize(s string) string {
	if !strings.ContainsAny(s, "\r\n\x00") {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == 0 {
			return -1
		}
		return r
	}, s)
}

func (v vars) value(name string) string {
	r := v.r
	switch name {
	case "client_ip":
		if v.opts.ClientAddr == nil {
			return ""
		}
		if a := v.opts.ClientAddr(r); a.IsValid() {
			return a.Unmap().String()
		}
		return ""
	case "request_id":
		if v.opts.RequestID != nil {
			return v.opts.RequestID(r)
		}
		return r.Header.Get("X-Request-Id")
	case "host":
		return r.Host
	case "hostname":
		return hostname(r.Host)
	case "tls_sni":
		if cs := v.tlsState(); cs != nil {
			return cs.ServerName
		}
		return ""
	case "scheme":
		if v.tlsState() != nil {
			return "https"
		}
		return "http"
	case "method":
		return r.Method
	case "path":
		return r.URL.EscapedPath()
	case "query":
		return r.URL.RawQuery
	case "request_uri":
		return r.URL.RequestURI()
	case "route":
		return v.opts.Route
	}
	return ""
}

func (v vars) tlsState() *tls.ConnectionState {
	if v.opts.TLSState != nil {
		return v.opts.TLSState(v.r)
	}
	return v.r.TLS
}

// hostname returns host without its port, with an IPv6 address kept in
// brackets so the result fits a URL.
func hostname(host string) string {
	h := host
	if hp, _, err := net.SplitHostPort(host); err == nil {
		h = hp
	}
	h = strings.Trim(h, "[]")
	if a, err := netip.ParseAddr(h); err == nil && a.Is6() {
		return "[" + h + "]"
	}
	return h
}
