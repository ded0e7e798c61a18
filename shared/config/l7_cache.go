package config

import "strings"

// Cache is the process-wide configuration of the L7 shared HTTP cache. All
// routes with caching enabled share one memory budget.
type Cache struct {
	// MaxSize is the memory budget for stored responses, counting header
	// fields and bodies. The least recently used entries are evicted to stay
	// under it.
	MaxSize Size `yaml:"max_size"`
}

// RouteCache configures caching of one route's responses.
type RouteCache struct {
	// Enabled turns caching on for the route.
	Enabled bool `yaml:"enabled"`
	// Key lists extra parts of the cache key besides method, scheme, host,
	// path and query: "header:NAME", "cookie:NAME", or "client" for the
	// client address. The client address is never part of the key unless
	// listed here.
	Key []string `yaml:"key"`
	// MaxEntrySize is the largest response (header fields and body) that is
	// stored. Larger responses are streamed to the client and not kept.
	MaxEntrySize Size `yaml:"max_entry_size"`
	// Strict honours "private" and "no-cache" in responses (the default).
	// When false, a response marked private is stored as if it were public
	// and "no-cache" in a response is ignored.
	Strict *bool `yaml:"strict"`
	// StoreSetCookie allows storing responses that carry Set-Cookie. The
	// Set-Cookie field is removed from the stored copy, so it only ever
	// reaches the client whose request fetched it.
	StoreSetCookie bool `yaml:"store_set_cookie"`
	// Heuristic allows heuristic freshness (a fraction of the time since
	// Last-Modified) for responses without explicit freshness. Default true.
	Heuristic *bool `yaml:"heuristic"`
	// CDNCacheControl makes a valid CDN-Cache-Control (RFC 9213) decide
	// storing and reuse in place of Cache-Control and Expires, as a CDN's
	// cache does. Turn it off when a CDN in front of this proxy is the one
	// the origin's CDN-Cache-Control is meant for. Default true.
	CDNCacheControl *bool `yaml:"cdn_cache_control"`
	// CoalesceTimeout bounds how long a request waits for a concurrent
	// request for the same key before it goes upstream itself.
	CoalesceTimeout Duration `yaml:"coalesce_timeout"`
}

// Cache defaults.
const (
	DefaultCacheMaxSize         = Size(256 << 20)
	DefaultCacheMaxEntrySize    = Size(8 << 20)
	DefaultCacheCoalesceTimeout = Duration(10e9)
)

// StrictEnabled reports whether "private" and "no-cache" are honoured
// strictly, true when unset.
func (c *RouteCache) StrictEnabled() bool { return c.Strict == nil || *c.Strict }

// HeuristicEnabled reports whether heuristic freshness is allowed, true when
// unset.
func (c *RouteCache) HeuristicEnabled() bool { return c.Heuristic == nil || *c.Heuristic }

// CDNCacheControlEnabled reports whether CDN-Cache-Control replaces
// Cache-Control and Expires, true when unset.
func (c *RouteCache) CDNCacheControlEnabled() bool {
	return c.CDNCacheControl == nil || *c.CDNCacheControl
}

// setCacheDefaults fills the cache settings of c and of every route.
func (c *L7) setCacheDefaults() {
	anyEnabled := false
	for i := range c.Routes {
		rc := c.Routes[i].Cache
		if rc == nil {
			continue
		}
		anyEnabled = anyEnabled || rc.Enabled
		if rc.MaxEntrySize == 0 {
			rc.MaxEntrySize = DefaultCacheMaxEntrySize
		}
		if rc.CoalesceTimeout == 0 {
			rc.CoalesceTimeout = DefaultCacheCoalesceTimeout
		}
	}
	if anyEnabled && c.Cache == nil {
		c.Cache = &Cache{}
	}
	if c.Cache != nil && c.Cache.MaxSize == 0 {
		c.Cache.MaxSize = DefaultCacheMaxSize
	}
}

// validateCache checks the global cache settings and each route's.
func (c *L7) validateCache(path string, errs *Errors) {
	var budget Size
	if c.Cache != nil {
		budget = c.Cache.MaxSize
		if budget < 64<<10 {
			errs.add(join(path, "cache.max_size"), "%d bytes is below the minimum of 64KiB", int64(budget))
		}
	}
	for i := range c.Routes {
		rc := c.Routes[i].Cache
		if rc == nil {
			continue
		}
		rc.validate(join(index(join(path, "routes"), i), "cache"), budget, errs)
	}
}

func (c *RouteCache) validate(path string, budget Size, errs *Errors) {
	if c.MaxEntrySize < 1024 {
		errs.add(join(path, "max_entry_size"), "%d bytes is below the minimum of 1KiB", int64(c.MaxEntrySize))
	}
	if budget > 0 && c.MaxEntrySize > budget {
		errs.add(join(path, "max_entry_size"), "%d bytes is larger than cache.max_size (%d bytes)", int64(c.MaxEntrySize), int64(budget))
	}
	if c.CoalesceTimeout < Duration(1e6) {
		errs.add(join(path, "coalesce_timeout"), "%s is below the minimum of 1ms", c.CoalesceTimeout)
	}
	seen := map[string]int{}
	for i, part := range c.Key {
		kp := index(join(path, "key"), i)
		if !validCacheKeyPart(part) {
			errs.add(kp, "%q is not header:NAME, cookie:NAME or client", part)
			continue
		}
		norm := strings.ToLower(part)
		if j, dup := seen[norm]; dup {
			errs.add(kp, "%q repeats key[%d]", part, j)
		}
		seen[norm] = i
	}
}

// validCacheKeyPart reports whether part is "client", "header:NAME" or
// "cookie:NAME" with NAME an HTTP token.
func validCacheKeyPart(part string) bool {
	if part == "client" {
		return true
	}
	kind, name, ok := strings.Cut(part, ":")
	if !ok || (kind != "header" && kind != "cookie") || name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !isTokenChar(name[i]) {
			return false
		}
	}
	return true
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
