package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/tidegate/tidegate/shared/config"
)

// Decision is the outcome of one rate-limit check.
type Decision struct {
	Allowed bool
	// Delay is how long an allowed request waits first (delay mode only).
	Delay time.Duration
	// RetryAfter is how long a rejected request's client should wait.
	RetryAfter time.Duration
	// Remaining is how many more requests the key may make right now.
	Remaining int
	// Reset is the time until the key's bucket is full again.
	Reset time.Duration
	// Shared reports whether Redis made the decision.
	Shared bool
}

// Result labels for metrics and logs.
const (
	ResultAllowed  = "allowed"
	ResultDelayed  = "delayed"
	ResultRejected = "rejected"
)

// Options are the dependencies of a [Limiter].
type Options struct {
	Route string
	// ClientAddr returns the real client address of a request. It is the
	// only source of the client key: X-Forwarded-For is never read.
	ClientAddr func(*http.Request) netip.Addr
	Registerer prometheus.Registerer // nil registers nothing
	Logger     *slog.Logger          // nil discards
	// OnDecision, when set, is called once per request with its decision,
	// for example to fill access-log fields.
	OnDecision func(*http.Request, Decision)
}

// Limiter enforces one route's rate limit. It is safe for concurrent use;
// call Close when the route is retired.
type Limiter struct {
	cfg        config.RateLimitPolicy
	opts       Options
	logger     *slog.Logger
	limit      rate.Limit
	capacity   int
	maxDelay   time.Duration
	idleAfter  time.Duration
	keyKind    string // "client", "header", "cookie" or "route"
	keyName    string
	policyHdr  string
	policyName string

	shards   [shardCount]shard
	keys     atomic.Int64
	overflow *rate.Limiter

	redis   *redisStore
	metrics *metrics
	stop    chan struct{}
	stopped sync.Once
}

const shardCount = 32

type shard struct {
	mu      sync.Mutex
	entries map[string]*entry
}

type entry struct {
	limiter  *rate.Limiter
	lastSeen atomic.Int64 // unix nanoseconds
}

// New builds the limiter of one route from its policy. With a Redis
// section it connects to Redis lazily. While Redis cannot be reached the
// limiter falls back to local limits and never fails a request.
func New(cfg *config.RateLimitPolicy, opts Options) (*Limiter, error) {
	if cfg.Requests < 1 || cfg.Per <= 0 {
		return nil, fmt.Errorf("ratelimit: route %q: rate %d per %s is not positive", opts.Route, cfg.Requests, cfg.Per)
	}
	if opts.ClientAddr == nil {
		return nil, fmt.Errorf("ratelimit: route %q: no client address function", opts.Route)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l := &Limiter{
		cfg:    *cfg,
		opts:   opts,
		logger: logger.With("component", "ratelimit", "route", opts.Route),
		limit:  rate.Limit(float64(cfg.Requests) / cfg.Per.D().Seconds()),
		stop:   make(chan struct{}),
	}
	l.capacity = max(cfg.Burst, 1)
	if cfg.Delay {
		// Like nginx's burst without nodelay: requests conform one by one
		// and up to Burst of them wait in line.
		l.capacity = 1
		l.maxDelay = time.Duration(float64(cfg.Burst) / float64(l.limit) * float64(time.Second))
	}
	// A bucket idle this long is full again, so forgetting it changes no
	// decision.
	l.idleAfter = max(time.Duration(float64(l.capacity)/float64(l.limit)*float64(time.Second)), time.Second)

	switch {
	case cfg.Key == "client" || cfg.Key == "":
		l.keyKind = "client"
	case cfg.Key == "route":
		l.keyKind = "route"
	case strings.HasPrefix(cfg.Key, "header:"):
		l.keyKind, l.keyName = "header", http.CanonicalHeaderKey(cfg.Key[len("header:"):])
	case strings.HasPrefix(cfg.Key, "cookie:"):
		l.keyKind, l.keyName = "cookie", cfg.Key[len("cookie:"):]
	default:
		return nil, fmt.Errorf("ratelimit: route %q: unknown key %q", opts.Route, cfg.Key)
	}
	for i := range l.shards {
		l.shards[i].entries = make(map[string]*entry)
	}
	l.overflow = rate.NewLimiter(l.limit, l.capacity)
	l.policyName = opts.Route
	if l.policyName == "" {
		l.policyName = "default"
	}
	window := int64(math.Ceil(cfg.Per.D().Seconds()))
	l.policyHdr = fmt.Sprintf("%s;q=%d;w=%d", sfString(l.policyName), cfg.Requests, window)
	l.metrics = newMetrics(opts.Registerer, opts.Route)

	if cfg.Redis != nil {
		l.redis = newRedisStore(cfg.Redis, opts.Route)
	}
	go l.sweepLoop()
	return l, nil
}

// Close stops the sweeper and closes the Redis client.
func (l *Limiter) Close() error {
	l.stopped.Do(func() { close(l.stop) })
	if l.redis != nil {
		return l.redis.close()
	}
	return nil
}

// Key returns the limit key of r: the client address, the configured
// header or cookie (falling back to the client address when absent), or ""
// for a route-wide limit.
func (l *Limiter) Key(r *http.Request) string {
	switch l.keyKind {
	case "route":
		return ""
	case "header":
		if v := r.Header.Get(l.keyName); v != "" {
			return "h:" + v
		}
	case "cookie":
		if c, err := r.Cookie(l.keyName); err == nil && c.Value != "" {
			return "k:" + c.Value
		}
	}
	addr := l.opts.ClientAddr(r)
	if !addr.IsValid() {
		return "c:unknown"
	}
	return "c:" + addr.Unmap().String()
}

// Check takes one request for key from its bucket and returns the decision.
// A delayed decision has already reserved its slot: the caller waits Delay
// and then proceeds.
func (l *Limiter) Check(ctx context.Context, key string) Decision {
	now := time.Now()
	if l.redis != nil && l.redis.shouldTry(now) {
		d, err := l.redis.check(ctx, key, l.limit, l.capacity)
		if err == nil {
			if l.redis.down.CompareAndSwap(true, false) {
				l.logger.Info("redis rate limit store reachable again, using shared limits")
			}
			return d
		}
		l.metrics.redisErrors.Inc()
		l.redis.backOff(now)
		if l.redis.down.CompareAndSwap(false, true) {
			l.logger.Warn("redis rate limit store unreachable, using local limits", "err", err)
		}
	}
	return l.checkLocal(now, key)
}

func (l *Limiter) checkLocal(now time.Time, key string) Decision {
	lim := l.bucket(now, key)
	res := lim.ReserveN(now, 1)
	delay := res.DelayFrom(now)
	if delay > l.maxDelay {
		res.CancelAt(now)
		return Decision{RetryAfter: delay - l.maxDelay, Reset: l.resetAfter(lim, now)}
	}
	remaining := int(math.Floor(lim.TokensAt(now)))
	return Decision{Allowed: true, Delay: delay, Remaining: max(remaining, 0), Reset: l.resetAfter(lim, now)}
}

// resetAfter returns how long until lim's bucket is full.
func (l *Limiter) resetAfter(lim *rate.Limiter, now time.Time) time.Duration {
	missing := float64(l.capacity) - lim.TokensAt(now)
	if missing <= 0 {
		return 0
	}
	return time.Duration(missing / float64(l.limit) * float64(time.Second))
}

// bucket returns the limiter of key, creating it unless MaxKeys are
// tracked already, in which case new keys share one overflow bucket.
func (l *Limiter) bucket(now time.Time, key string) *rate.Limiter {
	sh := &l.shards[shardOf(key)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e, ok := sh.entries[key]; ok {
		e.lastSeen.Store(now.UnixNano())
		return e.limiter
	}
	if l.keys.Load() >= int64(l.cfg.MaxKeys) {
		l.metrics.overflow.Inc()
		return l.overflow
	}
	e := &entry{limiter: rate.NewLimiter(l.limit, l.capacity)}
	e.lastSeen.Store(now.UnixNano())
	sh.entries[key] = e
	l.keys.Add(1)
	return e.limiter
}

func shardOf(key string) int {
	// FNV-1a, inlined to avoid an allocation per request.
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return int(h % shardCount)
}

func (l *Limiter) sweepLoop() {
	interval := min(max(l.idleAfter, time.Second), time.Minute)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case now := <-t.C:
			l.sweep(now)
		}
	}
}

// sweep removes keys idle for idleAfter, whose buckets are full again.
func (l *Limiter) sweep(now time.Time) {
	cutoff := now.Add(-l.idleAfter).UnixNano()
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for k, e := range sh.entries {
			if e.lastSeen.Load() <= cutoff {
				delete(sh.entries, k)
				l.keys.Add(-1)
			}
		}
		sh.mu.Unlock()
	}
	l.metrics.keys.Set(float64(l.keys.Load()))
}

// Middleware returns next behind the limit. Every response carries
// RateLimit-Policy and RateLimit headers (draft-ietf-httpapi-ratelimit-
// headers, structured-field form). A rejected request gets 429 with
// Retry-After in whole seconds. In delay mode an excess request within the
// burst waits instead, and is dropped if its client goes away meanwhile.
func (l *Limiter) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := l.Check(r.Context(), l.Key(r))
		if l.opts.OnDecision != nil {
			l.opts.OnDecision(r, d)
		}
		h := w.Header()
		h.Set("RateLimit-Policy", l.policyHdr)
		h.Set("RateLimit", fmt.Sprintf("%s;r=%d;t=%d", sfString(l.policyName), d.Remaining, ceilSeconds(max(d.Reset, d.RetryAfter))))
		if !d.Allowed {
			l.metrics.decisions.WithLabelValues(ResultRejected).Inc()
			h.Set("Retry-After", strconv.FormatInt(max(ceilSeconds(d.RetryAfter), 1), 10))
			http.Error(w, "429 Too Many Requests", http.StatusTooManyRequests)
			return
		}
		if d.Delay > 0 {
			l.metrics.decisions.WithLabelValues(ResultDelayed).Inc()
			t := time.NewTimer(d.Delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		} else {
			l.metrics.decisions.WithLabelValues(ResultAllowed).Inc()
		}
		next.ServeHTTP(w, r)
	})
}

func ceilSeconds(d time.Duration) int64 {
	return int64(math.Ceil(d.Seconds()))
}

// sfString formats s as a structured-field string (RFC 8941), replacing
// characters it cannot contain.
func sfString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c > 0x7e:
			b.WriteByte('_')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
