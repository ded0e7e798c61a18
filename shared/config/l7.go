package config

import (
	"regexp"
	"strings"
)

// L7 is the configuration of an L7 proxy process.
type L7 struct {
	Listeners []Listener `yaml:"listeners"`
	Routes    []Route    `yaml:"routes"`
	Upstreams []Upstream `yaml:"upstreams"`
	AccessLog AccessLog  `yaml:"access_log"`
	Cache     *Cache     `yaml:"cache"`
}

// Listener is one address the proxy accepts client connections on.
type Listener struct {
	Name    string `yaml:"name"`
	Address string `yaml:"address"`

	ProxyProtocol ProxyProtocol `yaml:"proxy_protocol"`
	TLS           *TLS          `yaml:"tls"`
	// H2C accepts cleartext HTTP/2 with prior knowledge on a listener
	// without TLS. The Upgrade: h2c handshake is not supported, since RFC
	// 9113 section 3.1 deprecates it and gRPC clients do not use it.
	H2C bool `yaml:"h2c"`

	// TrustedForwarders lists peers (CIDRs, matched against the client
	// address) whose inbound X-Forwarded-* and Forwarded headers are kept and
	// extended; from anyone else they are replaced.
	TrustedForwarders []string `yaml:"trusted_forwarders"`

	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	ReadTimeout       Duration `yaml:"read_timeout"`
	WriteTimeout      Duration `yaml:"write_timeout"`
	IdleTimeout       Duration `yaml:"idle_timeout"`
	MaxHeaderBytes    Size     `yaml:"max_header_bytes"`

	// Limits bounds request framing on this listener.
	Limits RequestLimits `yaml:"limits"`
	// FastPath, on by default, forwards plain HTTP/1.1 GET and HEAD
	// requests without the general HTTP server where the route allows it
	// (see docs/operations.md). false sends every request through the
	// general server.
	FastPath *bool `yaml:"fast_path"`
	// Policy is the default policy of every route served here.
	Policy *Policy `yaml:"policy"`
}

// ProxyProtocol configures PROXY protocol acceptance on a listener.
type ProxyProtocol struct {
	// Trusted lists peer CIDRs that must send a PROXY v1 or v2 header. A
	// header from any other peer is rejected.
	Trusted []string `yaml:"trusted"`
	// Timeout bounds how long the proxy waits for the header.
	Timeout Duration `yaml:"timeout"`
}

// TLS configures TLS termination on a listener.
type TLS struct {
	// Certificates are chosen by SNI; the first is the default for clients
	// that send no SNI or an unknown name.
	Certificates []Certificate `yaml:"certificates"`
	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version"`
	// SessionTicketKeyFile holds one or more 32-byte keys, base64 with one
	// per line or raw bytes. The first key encrypts new tickets. A fleet
	// shares the file so that nodes resume each other's sessions.
	SessionTicketKeyFile string `yaml:"session_ticket_key_file"`
}

// Certificate is one PEM certificate chain and key.
type Certificate struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Route matches requests and sends them to an upstream. Routes are tried in
// order; the first match wins.
type Route struct {
	Name     string     `yaml:"name"`
	Match    RouteMatch `yaml:"match"`
	Upstream string     `yaml:"upstream"`

	Cache *RouteCache `yaml:"cache"` // nil or enabled: false means no caching
	// Policy overrides the listener's policy section by section.
	Policy *Policy `yaml:"policy"`
}

// RouteMatch holds the conditions a request must all meet. An empty match
// accepts every request.
type RouteMatch struct {
	// Hosts are exact names or wildcards such as "*.example.com".
	Hosts      []string `yaml:"hosts"`
	Path       string   `yaml:"path"`        // exact path
	PathPrefix string   `yaml:"path_prefix"` // segment-agnostic prefix
	PathRegex  string   `yaml:"path_regex"`  // RE2, anchored by the author
	Methods    []string `yaml:"methods"`
	// Headers maps a header name to a value that must be present exactly.
	Headers map[string]string `yaml:"headers"`
}

// Upstream is a named pool of backends.
type Upstream struct {
	Name string `yaml:"name"`
	// Balance is "round_robin" (default), "least_request" or "hash".
	Balance string `yaml:"balance"`
	// HashKey, for Balance "hash": "client" (the client address),
	// "header:NAME" or "cookie:NAME".
	HashKey  string    `yaml:"hash_key"`
	Backends []Backend `yaml:"backends"`

	HealthCheck *HealthCheck `yaml:"health_check"`

	ConnectTimeout        Duration `yaml:"connect_timeout"`
	ResponseHeaderTimeout Duration `yaml:"response_header_timeout"`
	// IdleTimeout closes pooled connections idle this long; keep it below
	// the backends' own keep-alive timeout.
	IdleTimeout        Duration `yaml:"idle_timeout"`
	MaxIdlePerBackend  int      `yaml:"max_idle_per_backend"`
	MaxRequests        int      `yaml:"max_requests"` // concurrent, 0 means no cap
	Retries            int      `yaml:"retries"`
	TLS                bool     `yaml:"tls"`
	InsecureSkipVerify bool     `yaml:"insecure_skip_verify"`

	// Protocol is how the proxy talks to backends: "http1" (default;
	// HTTP/1.1, or HTTP/2 through ALPN when tls is set) or "h2c" (cleartext
	// HTTP/2 with prior knowledge, which gRPC backends need). Health checks
	// of type http always send HTTP/1.1, so h2c-only backends such as
	// gRPC servers need type tcp.
	Protocol string `yaml:"protocol"`
	// Outlier configures passive ejection of failing backends.
	Outlier Outlier `yaml:"outlier"`
	// RetryBudget caps retries across the pool so that a failing backend
	// cannot multiply the load on the others.
	RetryBudget RetryBudget `yaml:"retry_budget"`
}

// Outlier configures passive ejection: a backend that fails
// ConsecutiveFailures requests in a row (connect failures or 5xx responses)
// gets no traffic for Cooldown, then is tried again.
type Outlier struct {
	ConsecutiveFailures int      `yaml:"consecutive_failures"`
	Cooldown            Duration `yaml:"cooldown"`
}

// RetryBudget allows retries while the retries in flight stay below Percent
// of the requests in flight, or below MinConcurrency, whichever is larger.
type RetryBudget struct {
	Percent        int `yaml:"percent"`
	MinConcurrency int `yaml:"min_concurrency"`
}

// Backend is one server in an upstream pool.
type Backend struct {
	Address string `yaml:"address"`
	Weight  *int   `yaml:"weight"`
}

// AccessLog configures the per-request log.
type AccessLog struct {
	// Path is "stdout" (default), "off", or a file reopened on SIGUSR1.
	Path string `yaml:"path"`
}

// L7 defaults.
const (
	DefaultProxyHeaderTimeout    = Duration(5e9)
	DefaultReadHeaderTimeout     = Duration(10e9)
	DefaultListenerIdleTimeout   = Duration(60e9)
	DefaultMaxHeaderBytes        = Size(64 << 10)
	DefaultUpstreamConnect       = Duration(2e9)
	DefaultUpstreamHeaderTimeout = Duration(30e9)
	DefaultUpstreamIdleTimeout   = Duration(50e9)
	DefaultMaxIdlePerBackend     = 64
	DefaultOutlierFailures       = 5
	DefaultOutlierCooldown       = Duration(30e9)
	DefaultRetryBudgetPercent    = 20
	DefaultRetryMinConcurrency   = 3
)

// FastPathEnabled reports whether the listener uses the HTTP/1.1 fast
// path: true unless fast_path is false.
func (l *Listener) FastPathEnabled() bool { return l.FastPath == nil || *l.FastPath }

// BackendWeight returns the backend's weight, 1 when unset.
func (b Backend) BackendWeight() int {
	if b.Weight == nil {
		return 1
	}
	return *b.Weight
}

func (c *L7) setDefaults() {
	for i := range c.Listeners {
		l := &c.Listeners[i]
		if l.ProxyProtocol.Timeout == 0 {
			l.ProxyProtocol.Timeout = DefaultProxyHeaderTimeout
		}
		if l.ReadHeaderTimeout == 0 {
			l.ReadHeaderTimeout = DefaultReadHeaderTimeout
		}
		if l.IdleTimeout == 0 {
			l.IdleTimeout = DefaultListenerIdleTimeout
		}
		if l.MaxHeaderBytes == 0 {
			l.MaxHeaderBytes = DefaultMaxHeaderBytes
		}
		if l.TLS != nil && l.TLS.MinVersion == "" {
			l.TLS.MinVersion = "1.2"
		}
		l.Limits.setDefaults()
		l.Policy.setDefaults()
	}
	for i := range c.Routes {
		c.Routes[i].Policy.setDefaults()
	}
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		if u.Balance == "" {
			u.Balance = "round_robin"
		}
		if u.ConnectTimeout == 0 {
			u.ConnectTimeout = DefaultUpstreamConnect
		}
		if u.ResponseHeaderTimeout == 0 {
			u.ResponseHeaderTimeout = DefaultUpstreamHeaderTimeout
		}
		if u.IdleTimeout == 0 {
			u.IdleTimeout = DefaultUpstreamIdleTimeout
		}
		if u.MaxIdlePerBackend == 0 {
			u.MaxIdlePerBackend = DefaultMaxIdlePerBackend
		}
		if u.Protocol == "" {
			u.Protocol = "http1"
		}
		if u.Outlier.ConsecutiveFailures == 0 {
			u.Outlier.ConsecutiveFailures = DefaultOutlierFailures
		}
		if u.Outlier.Cooldown == 0 {
			u.Outlier.Cooldown = DefaultOutlierCooldown
		}
		if u.RetryBudget.Percent == 0 {
			u.RetryBudget.Percent = DefaultRetryBudgetPercent
		}
		if u.RetryBudget.MinConcurrency == 0 {
			u.RetryBudget.MinConcurrency = DefaultRetryMinConcurrency
		}
		if u.HealthCheck != nil {
			if u.HealthCheck.Type == "" {
				u.HealthCheck.Type = "http"
			}
			if u.HealthCheck.Type == "http" && u.HealthCheck.Path == "" {
				u.HealthCheck.Path = "/"
			}
			u.HealthCheck.setDefaults()
		}
	}
	if c.AccessLog.Path == "" {
		c.AccessLog.Path = "stdout"
	}
	c.setCacheDefaults()
}

func (c *L7) validate(path string, errs *Errors) {
	if len(c.Listeners) == 0 {
		errs.add(join(path, "listeners"), "is empty (at least one listener is required)")
	}
	addrs := map[string]int{}
	listenerNames := map[string]int{}
	for i := range c.Listeners {
		lp := index(join(path, "listeners"), i)
		c.Listeners[i].validate(lp, errs)
		if n := c.Listeners[i].Name; n != "" {
			if j, dup := listenerNames[n]; dup {
				errs.add(join(lp, "name"), "%q is already used by listeners[%d]", n, j)
			}
			listenerNames[n] = i
		}
		if a := c.Listeners[i].Address; a != "" {
			if j, dup := addrs[a]; dup {
				errs.add(join(lp, "address"), "%q is already used by listeners[%d]", a, j)
			}
			addrs[a] = i
		}
	}

	upstreams := map[string]int{}
	for i := range c.Upstreams {
		up := index(join(path, "upstreams"), i)
		c.Upstreams[i].validate(up, errs)
		if n := c.Upstreams[i].Name; n != "" {
			if j, dup := upstreams[n]; dup {
				errs.add(join(up, "name"), "%q is already used by upstreams[%d]", n, j)
			}
			upstreams[n] = i
		}
	}

	if len(c.Routes) == 0 {
		errs.add(join(path, "routes"), "is empty (at least one route is required)")
	}
	routeNames := map[string]int{}
	for i := range c.Routes {
		rp := index(join(path, "routes"), i)
		c.Routes[i].validate(rp, errs)
		if n := c.Routes[i].Name; n != "" {
			if j, dup := routeNames[n]; dup {
				errs.add(join(rp, "name"), "%q is already used by routes[%d]", n, j)
			}
			routeNames[n] = i
		}
		if u := c.Routes[i].Upstream; u != "" {
			if _, ok := upstreams[u]; !ok {
				errs.add(join(rp, "upstream"), "%q is not the name of any upstream", u)
			}
		}
	}

	switch {
	case c.AccessLog.Path == "stdout", c.AccessLog.Path == "off", strings.HasPrefix(c.AccessLog.Path, "/"):
	default:
		errs.add(join(path, "access_log.path"), "%q is not stdout, off or an absolute file path", c.AccessLog.Path)
	}
	c.validateCache(path, errs)
}

func (l *Listener) validate(path string, errs *Errors) {
	if l.Name == "" {
		errs.add(join(path, "name"), "is missing")
	}
	if l.Address == "" {
		errs.add(join(path, "address"), "is missing")
	} else {
		checkHostPort(errs, join(path, "address"), l.Address)
	}
	for i, c := range l.ProxyProtocol.Trusted {
		checkCIDR(errs, index(join(path, "proxy_protocol.trusted"), i), c)
	}
	for i, c := range l.TrustedForwarders {
		checkCIDR(errs, index(join(path, "trusted_forwarders"), i), c)
	}
	if l.TLS != nil {
		tp := join(path, "tls")
		if len(l.TLS.Certificates) == 0 {
			errs.add(join(tp, "certificates"), "is empty (at least one certificate is required)")
		}
		for i, c := range l.TLS.Certificates {
			cp := index(join(tp, "certificates"), i)
			if c.CertFile == "" {
				errs.add(join(cp, "cert_file"), "is missing")
			}
			if c.KeyFile == "" {
				errs.add(join(cp, "key_file"), "is missing")
			}
		}
		switch l.TLS.MinVersion {
		case "1.2", "1.3":
		default:
			errs.add(join(tp, "min_version"), "%q is not one of 1.2, 1.3", l.TLS.MinVersion)
		}
		if l.H2C {
			errs.add(join(path, "h2c"), "is set on a TLS listener (h2c is cleartext HTTP/2 only)")
		}
	}
	l.Limits.validate(join(path, "limits"), errs)
	l.Policy.validate(join(path, "policy"), errs)
}

func (r *Route) validate(path string, errs *Errors) {
	if r.Name == "" {
		errs.add(join(path, "name"), "is missing")
	}
	if r.Upstream == "" {
		errs.add(join(path, "upstream"), "is missing")
	}
	m := r.Match
	for i, h := range m.Hosts {
		if h == "" || strings.Contains(h[1:], "*") || (h[0] == '*' && !strings.HasPrefix(h, "*.")) {
			errs.add(index(join(path, "match.hosts"), i), "%q is not a host name or a wildcard such as \"*.example.com\"", h)
		}
	}
	set := 0
	for _, p := range []string{m.Path, m.PathPrefix, m.PathRegex} {
		if p != "" {
			set++
		}
	}
	if set > 1 {
		errs.add(join(path, "match"), "sets more than one of path, path_prefix, path_regex")
	}
	if m.Path != "" && m.Path[0] != '/' {
		errs.add(join(path, "match.path"), "%q must start with /", m.Path)
	}
	if m.PathPrefix != "" && m.PathPrefix[0] != '/' {
		errs.add(join(path, "match.path_prefix"), "%q must start with /", m.PathPrefix)
	}
	if m.PathRegex != "" {
		if _, err := regexp.Compile(m.PathRegex); err != nil {
			errs.add(join(path, "match.path_regex"), "%q is not a valid regular expression: %s", m.PathRegex, err)
		}
	}
	for i, meth := range m.Methods {
		if meth == "" || strings.ToUpper(meth) != meth {
			errs.add(index(join(path, "match.methods"), i), "%q is not an upper-case HTTP method", meth)
		}
	}
	r.Policy.validate(join(path, "policy"), errs)
}

func (u *Upstream) validate(path string, errs *Errors) {
	if u.Name == "" {
		errs.add(join(path, "name"), "is missing")
	}
	switch u.Balance {
	case "round_robin", "least_request":
		if u.HashKey != "" {
			errs.add(join(path, "hash_key"), "is set but balance is %q (hash_key needs balance: hash)", u.Balance)
		}
	case "hash":
		k := u.HashKey
		if k != "client" && !(strings.HasPrefix(k, "header:") && len(k) > 7) && !(strings.HasPrefix(k, "cookie:") && len(k) > 7) {
			errs.add(join(path, "hash_key"), "%q is not client, header:NAME or cookie:NAME", k)
		}
	default:
		errs.add(join(path, "balance"), "%q is not one of round_robin, least_request, hash", u.Balance)
	}
	if len(u.Backends) == 0 {
		errs.add(join(path, "backends"), "is empty (at least one backend is required)")
	}
	for i, b := range u.Backends {
		bp := index(join(path, "backends"), i)
		if b.Address == "" {
			errs.add(join(bp, "address"), "is missing")
		} else {
			checkHostPort(errs, join(bp, "address"), b.Address)
		}
		if b.Weight != nil && (*b.Weight < 0 || *b.Weight > 1000) {
			errs.add(join(bp, "weight"), "%d is outside 0..1000", *b.Weight)
		}
	}
	if u.HealthCheck != nil {
		u.HealthCheck.validate(join(path, "health_check"), errs)
		if u.HealthCheck.ProxyProtocol {
			errs.add(join(path, "health_check.proxy_protocol"), "is set but backends of an L7 upstream receive no PROXY header (remove it)")
		}
	}
	if u.Retries < 0 {
		errs.add(join(path, "retries"), "%d is negative", u.Retries)
	}
	if u.MaxRequests < 0 {
		errs.add(join(path, "max_requests"), "%d is negative", u.MaxRequests)
	}
	if u.MaxIdlePerBackend < 0 {
		errs.add(join(path, "max_idle_per_backend"), "%d is negative", u.MaxIdlePerBackend)
	}
	u.validateTransport(path, errs)
}

// validateTransport checks the keys that govern how requests reach
// backends: protocol, passive ejection and the retry budget.
func (u *Upstream) validateTransport(path string, errs *Errors) {
	switch u.Protocol {
	case "http1":
	case "h2c":
		if u.TLS {
			errs.add(join(path, "protocol"), "is h2c but tls is set (h2c is cleartext HTTP/2 only)")
		}
	default:
		errs.add(join(path, "protocol"), "%q is not one of http1, h2c", u.Protocol)
	}
	if u.Outlier.ConsecutiveFailures < 0 {
		errs.add(join(path, "outlier.consecutive_failures"), "%d is negative", u.Outlier.ConsecutiveFailures)
	}
	if u.RetryBudget.Percent < 0 || u.RetryBudget.Percent > 100 {
		errs.add(join(path, "retry_budget.percent"), "%d is outside 0..100", u.RetryBudget.Percent)
	}
	if u.RetryBudget.MinConcurrency < 0 {
		errs.add(join(path, "retry_budget.min_concurrency"), "%d is negative", u.RetryBudget.MinConcurrency)
	}
}
