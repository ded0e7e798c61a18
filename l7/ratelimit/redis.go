package ratelimit

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/tidegate/tidegate/shared/config"
)

// gcraScript is the generic cell rate algorithm on one Redis key holding
// the theoretical arrival time (TAT) in microseconds of Redis's clock, so
// nodes with skewed clocks agree. Arguments: the emission interval and the
// bucket capacity. It returns allowed (0 or 1), remaining requests, the
// wait before a retry and the time until the bucket is full, the last two
// in microseconds.
var gcraScript = redis.NewScript(`
local emission = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call("GET", KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + emission
local allow_at = new_tat - capacity * emission
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
redis.call("SET", KEYS[1], new_tat, "PX", math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((now - allow_at) / emission), 0, new_tat - now}
`)

type redisStore struct {
	client  *redis.Client
	prefix  string
	timeout time.Duration
	// down is set while Redis fails, so the switch to local limits and back
	// is logged once each way.
	down atomic.Bool
	// retryAt (unix nanoseconds) is when to try Redis again after a
	// failure. Until then checks stay local and add no latency.
	retryAt atomic.Int64
}

// redisRetryInterval is how long checks stay local after a Redis failure.
const redisRetryInterval = time.Second

func (s *redisStore) shouldTry(now time.Time) bool {
	return now.UnixNano() >= s.retryAt.Load()
}

func (s *redisStore) backOff(now time.Time) {
	s.retryAt.Store(now.Add(redisRetryInterval).UnixNano())
}

func newRedisStore(cfg *config.RedisLimit, route string) *redisStore {
	opts := &redis.Options{
		Addr:         cfg.Address,
		Password:     cfg.Password,
		DB:           cfg.DB,
		DialTimeout:  cfg.Timeout.D(),
		ReadTimeout:  cfg.Timeout.D(),
		WriteTimeout: cfg.Timeout.D(),
		MaxRetries:   -1, // a failed check falls back at once
	}
	if sock, ok := strings.CutPrefix(cfg.Address, "unix:"); ok {
		opts.Network, opts.Addr = "unix", sock
	}
	return &redisStore{
		client:  redis.NewClient(opts),
		prefix:  cfg.Prefix + route + ":",
		timeout: cfg.Timeout.D(),
	}
}

func (s *redisStore) check(ctx context.Context, key string, limit rate.Limit, capacity int) (Decision, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	emission := int64(float64(time.Second/time.Microsecond) / float64(limit))
	res, err := gcraScript.Run(ctx, s.client, []string{s.prefix + key}, max(emission, 1), capacity).Int64Slice()
	if err != nil {
		return Decision{}, fmt.Errorf("ratelimit: redis check: %w", err)
	}
	if len(res) != 4 {
		return Decision{}, fmt.Errorf("ratelimit: redis check returned %d values, want 4", len(res))
	}
	return Decision{
		Allowed:    res[0] == 1,
		Remaining:  int(res[1]),
		RetryAfter: time.Duration(res[2]) * time.Microsecond,
		Reset:      time.Duration(res[3]) * time.Microsecond,
		Shared:     true,
	}, nil
}

func (s *redisStore) close() error { return s.client.Close() }
