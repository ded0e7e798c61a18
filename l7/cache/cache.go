package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tidegate/tidegate/l7/passthrough"
	"github.com/tidegate/tidegate/shared/config"
)

// Config is the process-wide cache configuration.
type Config struct {
	// MaxBytes is the memory budget for stored header fields and bodies.
	MaxBytes int64
	// Name identifies this cache in the Cache-Status field. Empty means
	// "tidegate".
	Name string
	// Now returns the current time. Nil means time.Now, and tests inject a
	// clock here.
	Now func() time.Time
	// RefreshTimeout bounds a background refresh started by
	// stale-while-revalidate. Zero means 30s.
	RefreshTimeout time.Duration
	// OnResult, when set, receives the cache result for a request on a
	// caching route: one of the Result constants. It runs once per
	// response, on the goroutine serving r and before the response
	// header is sent, and never for background refreshes.
	OnResult func(r *http.Request, result string)
	// DetachContext, when set, derives the context of a background refresh
	// from the context of the request that started it. It must drop the
	// cancellation, and it should drop per-request state that the
	// upstream handler writes to. Nil means context.WithoutCancel.
	DetachContext func(context.Context) context.Context
}

// Results passed to [Config.OnResult].
const (
	// ResultHit is a fresh stored response.
	ResultHit = "hit"
	// ResultMiss is a response from upstream, stored or not. A request
	// that no stored response may satisfy (with no-cache, say) is a miss.
	ResultMiss = "miss"
	// ResultStale is a stale stored response, served under
	// stale-while-revalidate, stale-if-error or the request's max-stale.
	ResultStale = "stale"
	// ResultRevalidated is a stored response that upstream confirmed with
	// a 304.
	ResultRevalidated = "revalidated"
	// ResultBypass is a request the cache passed on without looking: an
	// upgrade, a GET with a body, a request with no-store, or a method
	// other than GET and HEAD.
	ResultBypass = "bypass"
)

// RoutePolicy is the cache configuration of one route.
type RoutePolicy struct {
	// Route names the route in metrics.
	Route string
	// Enabled turns caching on. Middleware returns next unchanged for a
	// disabled policy.
	Enabled bool
	// KeyParts are extra key parts: "header:NAME", "cookie:NAME", "client".
	KeyParts []string
	// MaxEntrySize is the largest response, header fields and body, that is
	// stored. Larger ones are streamed to the client and dropped.
	MaxEntrySize int64
	// Strict honours private and no-cache in responses.
	Strict bool
	// StoreSetCookie allows storing responses with Set-Cookie, which is
	// removed from the stored copy.
	StoreSetCookie bool
	// Heuristic allows heuristic freshness from Last-Modified.
	Heuristic bool
	// CDNCacheControl makes a valid CDN-Cache-Control replace
	// Cache-Control and Expires (RFC 9213).
	CDNCacheControl bool
	// CoalesceTimeout bounds how long a request waits for a concurrent
	// request for the same key before it goes upstream itself.
	CoalesceTimeout time.Duration
}

// ErrInvalidConfig is wrapped by New for a configuration it cannot use.
var ErrInvalidConfig = errors.New("cache: invalid configuration")

// ConfigFrom converts the YAML cache settings into a Config. A nil c gives
// the default budget.
func ConfigFrom(c *config.Cache) Config {
	if c == nil {
		return Config{MaxBytes: int64(config.DefaultCacheMaxSize)}
	}
	return Config{MaxBytes: int64(c.MaxSize)}
}

// PolicyFrom converts a route's YAML cache settings into a RoutePolicy. A
// nil rc gives a disabled policy.
func PolicyFrom(route string, rc *config.RouteCache) RoutePolicy {
	if rc == nil {
		return RoutePolicy{Route: route}
	}
	return RoutePolicy{
		Route:           route,
		Enabled:         rc.Enabled,
		KeyParts:        rc.Key,
		MaxEntrySize:    int64(rc.MaxEntrySize),
		Strict:          rc.StrictEnabled(),
		StoreSetCookie:  rc.StoreSetCookie,
		Heuristic:       rc.HeuristicEnabled(),
		CDNCacheControl: rc.CDNCacheControlEnabled(),
		CoalesceTimeout: rc.CoalesceTimeout.D(),
	}
}

// Cache is a shared HTTP cache held in memory. Its Middleware serves any
// number of routes from one budget. A Cache is safe for concurrent use.
type Cache struct {
	name           string
	now            func() time.Time
	refreshTimeout time.Duration
	onResult       func(r *http.Request, result string)
	detach         func(context.Context) context.Context
	logger         *slog.Logger
	store          *store
	metrics        *metrics
	flights        flights

	refreshMu  sync.Mutex
	refreshing map[string]bool
	background sync.WaitGroup
}

// New builds a cache and registers its metrics on reg (nil skips
// registration).
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Cache, error) {
	if cfg.MaxBytes <= 0 {
		return nil, fmt.Errorf("%w: max bytes %d must be positive", ErrInvalidConfig, cfg.MaxBytes)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Cache{
		name:           cfg.Name,
		now:            cfg.Now,
		refreshTimeout: cfg.RefreshTimeout,
		onResult:       cfg.OnResult,
		detach:         cfg.DetachContext,
		logger:         logger.With("component", "cache"),
		refreshing:     map[string]bool{},
	}

	if c.name == "" {
		c.name = "tidegate"
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.detach == nil {
		c.detach = context.WithoutCancel
	}
	if c.refreshTimeout <= 0 {
		c.refreshTimeout = 30 * time.Second
	}

	c.store = newStore(cfg.MaxBytes, func(n int) {
		if c.metrics != nil {
			c.metrics.evictions.Add(float64(n))
		}
	})
	m, err := newMetrics(reg, c.store)
	if err != nil {
		return nil, fmt.Errorf("register cache metrics: %w", err)
	}
	c.metrics = m
	c.flights.m = map[string]*flight{}
	return c, nil
}

// Middleware returns a handler that serves cacheable requests from the
// cache and calls next, which performs the upstream request, for the rest.
// Revalidations and background refreshes are also calls of next, with a
// modified copy of the client's request.
func (c *Cache) Middleware(p RoutePolicy, next http.Handler) http.Handler {
	if !p.Enabled {
		return next
	}
	if p.MaxEntrySize <= 0 {
		p.MaxEntrySize = int64(config.DefaultCacheMaxEntrySize)
	}
	if p.CoalesceTimeout <= 0 {
		p.CoalesceTimeout = config.DefaultCacheCoalesceTimeout.D()
	}
	return &handler{
		c:     c,
		p:     p,
		parts: parseKeyParts(p.KeyParts),
		sp:    storePolicy{strict: p.Strict, storeSetCookie: p.StoreSetCookie, heuristic: p.Heuristic, targeted: p.CDNCacheControl},
		next:  next,
		hits:  c.metrics.hits.WithLabelValues(p.Route),
	}
}

// Invalidator returns a handler for routes without caching. It passes every
// request to next unchanged, and a successful unsafe request still removes
// the entries that other routes stored for its URI, Location and
// Content-Location (RFC 9111 section 4.4).
func (c *Cache) Invalidator(next http.Handler) http.Handler {
	return &invalidator{h: &handler{c: c, next: next}}
}

// invalidator passes safe requests through and invalidates after unsafe
// ones. See [Cache.Invalidator].
type invalidator struct{ h *handler }

func (iv *invalidator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		iv.h.next.ServeHTTP(w, r)
	default:
		iv.h.invalidateAfter(w, r, false)
	}
}

// PassThrough implements [passthrough.Handler]: GET and HEAD requests
// reach the next handler untouched.
func (iv *invalidator) PassThrough(r *passthrough.Request) (http.Handler, func(int, passthrough.Head), bool) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return nil, nil, false
	}
	return iv.h.next, nil, true
}

// Resize changes the memory budget, for a configuration reload, evicting
// least recently used entries when the new budget is smaller.
func (c *Cache) Resize(maxBytes int64) error {
	if maxBytes <= 0 {
		return fmt.Errorf("%w: max bytes %d must be positive", ErrInvalidConfig, maxBytes)
	}
	c.store.setMax(maxBytes)
	c.logger.Info("cache resized", "max_bytes", maxBytes)
	return nil
}

// Wait blocks until background refreshes started so far have finished.
func (c *Cache) Wait() { c.background.Wait() }

// WaitContext waits like [Cache.Wait] until the background refreshes end or
// ctx is done, and then returns ctx's error. Refreshes still running at
// that point go on until they end or reach the refresh timeout.
func (c *Cache) WaitContext(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		c.background.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stats returns the bytes and entries stored.
func (c *Cache) Stats() (bytes int64, entries int) { return c.store.stats() }

// flight is one upstream request that concurrent misses for the same key
// wait for.
type flight struct {
	done    chan struct{}
	waiters atomic.Int32 // requests waiting, for tests and debugging
}

type flights struct {
	mu sync.Mutex
	m  map[string]*flight
}

// join returns the flight for key and whether the caller leads it, in which
// case it must call finish.
func (f *flights) join(key string) (*flight, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fl, ok := f.m[key]; ok {
		fl.waiters.Add(1)
		return fl, false
	}
	fl := &flight{done: make(chan struct{})}
	f.m[key] = fl
	return fl, true
}

func (f *flights) finish(key string, fl *flight) {
	f.mu.Lock()
	if f.m[key] == fl {
		delete(f.m, key)
	}
	f.mu.Unlock()
	close(fl.done)
}
