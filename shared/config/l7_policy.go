package config

import (
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
)

// RequestLimits bounds the HTTP/1.x framing of every request on a listener.
// They are checked on the raw byte stream before routing, so they exist only
// at listener level. The header size limit is the listener's
// max_header_bytes and the header timeout its read_header_timeout.
type RequestLimits struct {
	MaxRequestLine Size `yaml:"max_request_line"` // longer gets 414
	MaxURILength   Size `yaml:"max_uri_length"`   // longer gets 414
	MaxHeaderCount int  `yaml:"max_header_count"` // more gets 431
	// MaxBodyBytes caps a request body, declared or chunked; 0 means no cap.
	// Larger gets 413.
	MaxBodyBytes Size `yaml:"max_body_bytes"`
	// BodyReadTimeout is the longest wait for the next body bytes while the
	// proxy is reading a body. A slower client gets 408.
	BodyReadTimeout Duration `yaml:"body_read_timeout"`
}

// Policy holds the per-request policies of a route. A listener's policy is
// the default for every route served on it. Each section set on a route
// replaces the same section of the listener's policy as a whole, and a nil
// section means the policy is off.
type Policy struct {
	Access    *AccessPolicy    `yaml:"access"`
	RateLimit *RateLimitPolicy `yaml:"rate_limit"`
	Rewrite   *RewritePolicy   `yaml:"rewrite"`
	Compress  *CompressPolicy  `yaml:"compress"`
}

// AccessPolicy decides which requests a route accepts at all.
type AccessPolicy struct {
	// Allow lists CIDRs of client addresses that may use the route. Empty
	// allows every address not denied.
	Allow []string `yaml:"allow"`
	// Deny lists CIDRs that are rejected with 403 even when allowed.
	Deny []string `yaml:"deny"`
	// Methods lists the accepted methods. Others get 405 with Allow. Empty
	// accepts every method.
	Methods []string `yaml:"methods"`
	// RequiredHeaders lists headers a request must carry with a non-empty
	// value. A request without one gets 400.
	RequiredHeaders []string `yaml:"required_headers"`
}

// RateLimitPolicy limits the request rate per key.
type RateLimitPolicy struct {
	// Requests per Per is the sustained rate.
	Requests int      `yaml:"requests"`
	Per      Duration `yaml:"per"`
	// Burst is the bucket size: how many requests may arrive at once
	// (without Delay, at least 1), or how many excess requests wait in line
	// (with Delay).
	Burst int `yaml:"burst"`
	// Key is "client" (the client address, default), "header:NAME",
	// "cookie:NAME" or "route" (one limit for the whole route). A request
	// without the header or cookie is keyed by its client address.
	Key string `yaml:"key"`
	// Delay holds requests above the rate until they conform, up to Burst
	// of them, instead of rejecting them.
	Delay bool `yaml:"delay"`
	// MaxKeys bounds how many keys are tracked at once.
	MaxKeys int `yaml:"max_keys"`
	// Redis, when set, keeps the limit in Redis so all L7 nodes share it.
	Redis *RedisLimit `yaml:"redis"`
}

// RedisLimit configures a rate limit shared through Redis.
type RedisLimit struct {
	// Address is "host:port" or "unix:/path/to/socket".
	Address  string   `yaml:"address"`
	Password string   `yaml:"password"`
	DB       int      `yaml:"db"`
	Prefix   string   `yaml:"prefix"`  // key prefix, default "tidegate:rl:"
	Timeout  Duration `yaml:"timeout"` // per command, default 50ms
}

// RewritePolicy changes requests on their way to the backend and responses
// on their way back, or responds in place of the backend.
type RewritePolicy struct {
	Path            *PathRewrite   `yaml:"path"`
	Redirect        *Redirect      `yaml:"redirect"`
	RequestHeaders  *HeaderRules   `yaml:"request_headers"`
	ResponseHeaders *HeaderRules   `yaml:"response_headers"`
	FixedResponse   *FixedResponse `yaml:"fixed_response"`
}

// PathRewrite rewrites the request path. Exactly one of StripPrefix,
// ReplacePrefix and Regex is set. The query string is kept.
type PathRewrite struct {
	// StripPrefix removes a leading path prefix, matched on segment
	// boundaries ("/api" matches "/api" and "/api/x", not "/apix").
	StripPrefix string `yaml:"strip_prefix"`
	// ReplacePrefix swaps a leading prefix, matched like StripPrefix.
	ReplacePrefix *PrefixReplacement `yaml:"replace_prefix"`
	// Regex replaces the whole path when it matches. The replacement may
	// refer to capture groups as $1 or ${name}.
	Regex *RegexReplacement `yaml:"regex"`
}

// PrefixReplacement is the prefix From replaced by To.
type PrefixReplacement struct {
	From string `yaml:"from"`
	To   string `yaml:"to"`
}

// RegexReplacement is an RE2 pattern and its replacement template.
type RegexReplacement struct {
	Pattern     string `yaml:"pattern"`
	Replacement string `yaml:"replacement"`
}

// Redirect makes the route respond to every request with a redirect.
type Redirect struct {
	Status int `yaml:"status"` // 301, 302, 307 or 308 (default 301)
	// Location is a template such as "https://${hostname}${request_uri}".
	Location string `yaml:"location"`
}

// HeaderRules edit a header block. Remove runs first, then Set, then Add.
// Values are templates that may use ${variable} names from
// [RewriteVariables].
type HeaderRules struct {
	Add    map[string]string `yaml:"add"`
	Set    map[string]string `yaml:"set"`
	Remove []string          `yaml:"remove"`
}

// FixedResponse is the response a route sends to every request without
// calling a backend.
type FixedResponse struct {
	Status  int               `yaml:"status"` // default 200
	Headers map[string]string `yaml:"headers"`
	Body    string            `yaml:"body"`
}

// CompressPolicy compresses responses the client accepts compressed.
type CompressPolicy struct {
	// Encodings lists the encodings to offer in server preference order,
	// from "br", "zstd" and "gzip". Default: zstd, br, gzip.
	Encodings []string `yaml:"encodings"`
	// Levels per encoding: gzip 1..9 (default 5), br 0..11 (default 4),
	// zstd 1..4 for the fastest to the best of klauspost/compress
	// (default 2).
	GzipLevel   int `yaml:"gzip_level"`
	BrotliLevel int `yaml:"brotli_level"`
	ZstdLevel   int `yaml:"zstd_level"`
	// ZstdWindow caps the zstd window, and so each encoder's memory
	// (default 1MiB, a power of two from 1KiB to 512MiB).
	ZstdWindow Size `yaml:"zstd_window"`
	// MinSize is the smallest body worth compressing (default 1KiB).
	MinSize Size `yaml:"min_size"`
	// ContentTypes lists media types to compress; "text/*" matches every
	// text type. Default: text/*, application/json, application/javascript,
	// application/xml, image/svg+xml and their +json and +xml relatives.
	ContentTypes []string `yaml:"content_types"`
}

// RewriteVariables are the ${name} variables header and redirect templates
// may use.
var RewriteVariables = []string{
	"client_ip", "request_id", "host", "hostname", "tls_sni", "scheme",
	"method", "path", "query", "request_uri", "route",
}

// Policy defaults.
const (
	DefaultMaxRequestLine   = Size(8 << 10)
	DefaultMaxURILength     = Size(8 << 10)
	DefaultMaxHeaderCount   = 100
	DefaultBodyReadTimeout  = Duration(30e9)
	DefaultRateLimitMaxKeys = 100_000
	DefaultRedisPrefix      = "tidegate:rl:"
	DefaultRedisTimeout     = Duration(50e6)
	DefaultGzipLevel        = 5
	DefaultBrotliLevel      = 4
	DefaultZstdLevel        = 2
	DefaultZstdWindow       = Size(1 << 20)
	DefaultCompressMinSize  = Size(1 << 10)
)

// DefaultCompressEncodings is the server preference order when none is set.
var DefaultCompressEncodings = []string{"zstd", "br", "gzip"}

// DefaultCompressTypes are the media types compressed when none are set.
var DefaultCompressTypes = []string{
	"text/*", "application/json", "application/javascript", "application/xml",
	"image/svg+xml", "application/*+json", "application/*+xml",
}

// Merge returns the policy a route runs: each section the route sets
// replaces the listener's. Either argument may be nil.
func (p *Policy) Merge(route *Policy) Policy {
	var out Policy
	if p != nil {
		out = *p
	}
	if route == nil {
		return out
	}
	if route.Access != nil {
		out.Access = route.Access
	}
	if route.RateLimit != nil {
		out.RateLimit = route.RateLimit
	}
	if route.Rewrite != nil {
		out.Rewrite = route.Rewrite
	}
	if route.Compress != nil {
		out.Compress = route.Compress
	}
	return out
}

func (l *RequestLimits) setDefaults() {
	if l.MaxRequestLine == 0 {
		l.MaxRequestLine = DefaultMaxRequestLine
	}
	if l.MaxURILength == 0 {
		l.MaxURILength = DefaultMaxURILength
	}
	if l.MaxHeaderCount == 0 {
		l.MaxHeaderCount = DefaultMaxHeaderCount
	}
	if l.BodyReadTimeout == 0 {
		l.BodyReadTimeout = DefaultBodyReadTimeout
	}
}

func (l *RequestLimits) validate(path string, errs *Errors) {
	if l.MaxRequestLine < 16 {
		errs.add(join(path, "max_request_line"), "%d is below 16 bytes", l.MaxRequestLine)
	}
	if l.MaxURILength < 1 || l.MaxURILength > l.MaxRequestLine {
		errs.add(join(path, "max_uri_length"), "%d is outside 1..max_request_line (%d)", l.MaxURILength, l.MaxRequestLine)
	}
	if l.MaxHeaderCount < 1 {
		errs.add(join(path, "max_header_count"), "%d is below 1", l.MaxHeaderCount)
	}
}

func (p *Policy) setDefaults() {
	if p == nil {
		return
	}
	if rl := p.RateLimit; rl != nil {
		if rl.Key == "" {
			rl.Key = "client"
		}
		if rl.Per == 0 {
			rl.Per = Duration(1e9)
		}
		if rl.MaxKeys == 0 {
			rl.MaxKeys = DefaultRateLimitMaxKeys
		}
		if r := rl.Redis; r != nil {
			if r.Prefix == "" {
				r.Prefix = DefaultRedisPrefix
			}
			if r.Timeout == 0 {
				r.Timeout = DefaultRedisTimeout
			}
		}
	}
	if rw := p.Rewrite; rw != nil {
		if rw.Redirect != nil && rw.Redirect.Status == 0 {
			rw.Redirect.Status = http.StatusMovedPermanently
		}
		if rw.FixedResponse != nil && rw.FixedResponse.Status == 0 {
			rw.FixedResponse.Status = http.StatusOK
		}
	}
	if c := p.Compress; c != nil {
		if len(c.Encodings) == 0 {
			c.Encodings = append([]string(nil), DefaultCompressEncodings...)
		}
		if c.GzipLevel == 0 {
			c.GzipLevel = DefaultGzipLevel
		}
		if c.BrotliLevel == 0 {
			c.BrotliLevel = DefaultBrotliLevel
		}
		if c.ZstdLevel == 0 {
			c.ZstdLevel = DefaultZstdLevel
		}
		if c.ZstdWindow == 0 {
			c.ZstdWindow = DefaultZstdWindow
		}
		if c.MinSize == 0 {
			c.MinSize = DefaultCompressMinSize
		}
		if len(c.ContentTypes) == 0 {
			c.ContentTypes = append([]string(nil), DefaultCompressTypes...)
		}
	}
}

func (p *Policy) validate(path string, errs *Errors) {
	if p == nil {
		return
	}
	if p.Access != nil {
		p.Access.validate(join(path, "access"), errs)
	}
	if p.RateLimit != nil {
		p.RateLimit.validate(join(path, "rate_limit"), errs)
	}
	if p.Rewrite != nil {
		p.Rewrite.validate(join(path, "rewrite"), errs)
	}
	if p.Compress != nil {
		p.Compress.validate(join(path, "compress"), errs)
	}
}

func (a *AccessPolicy) validate(path string, errs *Errors) {
	for i, c := range a.Allow {
		checkPrefix(errs, index(join(path, "allow"), i), c)
	}
	for i, c := range a.Deny {
		checkPrefix(errs, index(join(path, "deny"), i), c)
	}
	for i, m := range a.Methods {
		if !isToken(m) || strings.ToUpper(m) != m {
			errs.add(index(join(path, "methods"), i), "%q is not an upper-case HTTP method", m)
		}
	}
	for i, h := range a.RequiredHeaders {
		if !isToken(h) {
			errs.add(index(join(path, "required_headers"), i), "%q is not a header name", h)
		}
	}
}

// checkPrefix reports a value that ParsePrefixOrAddr would reject.
func checkPrefix(errs *Errors, path, s string) {
	if _, err := ParsePrefixOrAddr(s); err != nil {
		errs.add(path, "%q is not a CIDR prefix such as \"10.0.0.0/8\" or an IP address", s)
	}
}

// ParsePrefixOrAddr parses a CIDR prefix, or a single address as a full
// length prefix. It masks host bits, so "10.1.2.3/8" is 10.0.0.0/8.
func ParsePrefixOrAddr(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (rl *RateLimitPolicy) validate(path string, errs *Errors) {
	if rl.Requests < 1 {
		errs.add(join(path, "requests"), "%d is below 1", rl.Requests)
	}
	if rl.Per < Duration(1e6) {
		errs.add(join(path, "per"), "%s is below 1ms", rl.Per)
	}
	if rl.Burst < 0 {
		errs.add(join(path, "burst"), "%d is negative", rl.Burst)
	}
	if rl.Delay && rl.Burst < 1 {
		errs.add(join(path, "burst"), "%d leaves no room to delay requests (delay needs burst of at least 1)", rl.Burst)
	}
	k := rl.Key
	if k != "client" && k != "route" && !(strings.HasPrefix(k, "header:") && isToken(k[7:])) && !(strings.HasPrefix(k, "cookie:") && len(k) > 7) {
		errs.add(join(path, "key"), "%q is not client, route, header:NAME or cookie:NAME", k)
	}
	if rl.MaxKeys < 1 {
		errs.add(join(path, "max_keys"), "%d is below 1", rl.MaxKeys)
	}
	if r := rl.Redis; r != nil {
		rp := join(path, "redis")
		if rl.Delay {
			errs.add(join(path, "delay"), "is set together with redis (shared limits only reject)")
		}
		if sock, ok := strings.CutPrefix(r.Address, "unix:"); ok {
			if !strings.HasPrefix(sock, "/") {
				errs.add(join(rp, "address"), "%q is not unix: followed by an absolute socket path", r.Address)
			}
		} else if r.Address == "" {
			errs.add(join(rp, "address"), "is missing")
		} else {
			checkHostPort(errs, join(rp, "address"), r.Address)
		}
		if r.DB < 0 {
			errs.add(join(rp, "db"), "%d is negative", r.DB)
		}
	}
}

func (rw *RewritePolicy) validate(path string, errs *Errors) {
	if rw.FixedResponse != nil && rw.Redirect != nil {
		errs.add(path, "sets both redirect and fixed_response (a route answers with one of them)")
	}
	if p := rw.Path; p != nil {
		pp := join(path, "path")
		set := 0
		if p.StripPrefix != "" {
			set++
			checkPathPrefix(errs, join(pp, "strip_prefix"), p.StripPrefix)
		}
		if p.ReplacePrefix != nil {
			set++
			checkPathPrefix(errs, join(pp, "replace_prefix.from"), p.ReplacePrefix.From)
			checkPathPrefix(errs, join(pp, "replace_prefix.to"), p.ReplacePrefix.To)
		}
		if p.Regex != nil {
			set++
			if _, err := regexp.Compile(p.Regex.Pattern); err != nil || p.Regex.Pattern == "" {
				errs.add(join(pp, "regex.pattern"), "%q is not a valid regular expression: %v", p.Regex.Pattern, err)
			}
			if !strings.HasPrefix(p.Regex.Replacement, "/") {
				errs.add(join(pp, "regex.replacement"), "%q must start with /", p.Regex.Replacement)
			}
		}
		if set != 1 {
			errs.add(pp, "sets %d of strip_prefix, replace_prefix, regex (exactly one is required)", set)
		}
	}
	if r := rw.Redirect; r != nil {
		rp := join(path, "redirect")
		switch r.Status {
		case 301, 302, 307, 308:
		default:
			errs.add(join(rp, "status"), "%d is not one of 301, 302, 307, 308", r.Status)
		}
		if r.Location == "" {
			errs.add(join(rp, "location"), "is missing")
		} else {
			checkTemplate(errs, join(rp, "location"), r.Location)
		}
	}
	checkHeaderRules(errs, join(path, "request_headers"), rw.RequestHeaders)
	checkHeaderRules(errs, join(path, "response_headers"), rw.ResponseHeaders)
	if f := rw.FixedResponse; f != nil {
		fp := join(path, "fixed_response")
		if f.Status < 200 || f.Status > 599 {
			errs.add(join(fp, "status"), "%d is outside 200..599", f.Status)
		}
		for name, v := range f.Headers {
			if !isToken(name) {
				errs.add(join(join(fp, "headers"), name), "%q is not a header name", name)
			}
			if strings.ContainsAny(v, "\r\n\x00") {
				errs.add(join(join(fp, "headers"), name), "value contains a line break or NUL")
			}
		}
	}
}

func checkPathPrefix(errs *Errors, path, p string) {
	if !strings.HasPrefix(p, "/") {
		errs.add(path, "%q must start with /", p)
	}
}

func checkHeaderRules(errs *Errors, path string, h *HeaderRules) {
	if h == nil {
		return
	}
	for _, m := range []struct {
		key string
		set map[string]string
	}{{"add", h.Add}, {"set", h.Set}} {
		for name, v := range m.set {
			kp := join(join(path, m.key), name)
			if !isToken(name) {
				errs.add(kp, "%q is not a header name", name)
			}
			if strings.ContainsAny(v, "\r\n\x00") {
				errs.add(kp, "value contains a line break or NUL")
			}
			checkTemplate(errs, kp, v)
		}
	}
	for i, name := range h.Remove {
		if !isToken(name) {
			errs.add(index(join(path, "remove"), i), "%q is not a header name", name)
		}
	}
}

// checkTemplate reports a ${...} reference that is unterminated or names
// no variable in RewriteVariables.
func checkTemplate(errs *Errors, path, tmpl string) {
	if _, err := TemplateVariables(tmpl); err != nil {
		errs.add(path, "%q: %s", tmpl, err)
	}
}

// TemplateVariables returns the ${name} variables tmpl uses, in order, or an
// error for an unterminated reference or an unknown name. "$$" is a literal
// dollar sign.
func TemplateVariables(tmpl string) ([]string, error) {
	var names []string
	for i := 0; i < len(tmpl); i++ {
		if tmpl[i] != '$' {
			continue
		}
		if i+1 < len(tmpl) && tmpl[i+1] == '$' {
			i++
			continue
		}
		if i+1 >= len(tmpl) || tmpl[i+1] != '{' {
			return nil, fmt.Errorf("$ at offset %d is not followed by {name} (write $$ for a dollar sign)", i)
		}
		end := strings.IndexByte(tmpl[i:], '}')
		if end < 0 {
			return nil, fmt.Errorf("${ at offset %d is not closed by }", i)
		}
		name := tmpl[i+2 : i+end]
		known := false
		for _, v := range RewriteVariables {
			known = known || v == name
		}
		if !known {
			return nil, fmt.Errorf("unknown variable ${%s} (known: %s)", name, strings.Join(RewriteVariables, ", "))
		}
		names = append(names, name)
		i += end
	}
	return names, nil
}

func (c *CompressPolicy) validate(path string, errs *Errors) {
	seen := map[string]bool{}
	for i, e := range c.Encodings {
		ep := index(join(path, "encodings"), i)
		switch e {
		case "gzip", "br", "zstd":
		default:
			errs.add(ep, "%q is not one of gzip, br, zstd", e)
		}
		if seen[e] {
			errs.add(ep, "%q is listed twice", e)
		}
		seen[e] = true
	}
	if c.GzipLevel < 1 || c.GzipLevel > 9 {
		errs.add(join(path, "gzip_level"), "%d is outside 1..9", c.GzipLevel)
	}
	if c.BrotliLevel < 0 || c.BrotliLevel > 11 {
		errs.add(join(path, "brotli_level"), "%d is outside 0..11", c.BrotliLevel)
	}
	if c.ZstdLevel < 1 || c.ZstdLevel > 4 {
		errs.add(join(path, "zstd_level"), "%d is outside 1..4", c.ZstdLevel)
	}
	if w := c.ZstdWindow; w < 1<<10 || w > 512<<20 || w&(w-1) != 0 {
		errs.add(join(path, "zstd_window"), "%d is not a power of two from 1KiB to 512MiB", w)
	}
	for i, t := range c.ContentTypes {
		typ, sub, ok := strings.Cut(t, "/")
		if !ok || !isToken(typ) || sub == "" || strings.ContainsAny(sub, " ;,") {
			errs.add(index(join(path, "content_types"), i), "%q is not a media type such as \"text/html\" or \"text/*\"", t)
		}
	}
}

// isToken reports whether s is a non-empty RFC 9110 token, the syntax of
// methods and header names.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}
