package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tidegate/tidegate/l7"
	"github.com/tidegate/tidegate/l7/cache"
	"github.com/tidegate/tidegate/shared/admin"
	"github.com/tidegate/tidegate/shared/config"
	"github.com/tidegate/tidegate/shared/lifecycle"
)

// newL7 builds an L7 server with the options of [l7Options].
func newL7(f *config.File, logger *slog.Logger, adm *admin.Server) (lifecycle.Service, error) {
	opts, err := l7Options(f, logger, adm)
	if err != nil {
		return nil, err
	}
	s, err := l7.New(f, logger, adm, opts...)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// l7Options builds the per-route middleware chain of an L7 process and
// registers the admin endpoints of its parts. Middlewares are listed in
// request order, because [l7.WithMiddleware] makes the first one added the
// outermost. Access rules and rate limits belong before the cache, so that
// a rejected request never reaches it. Compression belongs after the cache,
// between it and the upstream, so that one variant per content coding is
// stored.
func l7Options(f *config.File, logger *slog.Logger, adm *admin.Server) ([]l7.Option, error) {
	if f.L7 == nil {
		return nil, errors.New("l7 options: configuration has no l7 section")
	}
	c, err := newL7Cache(f.L7, logger, adm)
	if err != nil {
		return nil, err
	}

	opts := l7PolicyBeforeCache(logger, adm)
	opts = append(opts, l7.WithMiddleware("cache", c.middleware))
	opts = append(opts, l7PolicyAfterCache(logger, adm)...)
	return opts, nil
}

// l7Cache is the process-wide cache and the budget last applied to it.
type l7Cache struct {
	cache *cache.Cache

	// mu guards maxBytes. The server serializes reloads, but holding a
	// lock keeps the budget check correct without relying on that.
	mu       sync.Mutex
	maxBytes int64
}

// newL7Cache builds the cache that every route shares for the life of the
// process, so that reloads keep stored entries, and registers the purge
// endpoints. The cache exists even when no route enables caching, so that
// a reload can enable it and so that purge requests get a reply.
func newL7Cache(cfg *config.L7, logger *slog.Logger, adm *admin.Server) (*l7Cache, error) {
	cc := cache.ConfigFrom(cfg.Cache)
	// A nil Registerer skips registration. A nil *prometheus.Registry would
	// not, so the interface stays nil without an admin server.
	var reg prometheus.Registerer
	if adm != nil {
		reg = adm.Registry
	}
	c, err := cache.New(cc, logger, reg)
	if err != nil {
		return nil, fmt.Errorf("l7 cache: %w", err)
	}
	if adm != nil {
		// HandleMutating requires the admin token when one is configured.
		adm.HandleMutating("POST /cache/purge", c.PurgeHandler())
		adm.HandleMutating("DELETE /cache/purge", c.PurgeHandler())
	}
	return &l7Cache{cache: c, maxBytes: cc.MaxBytes}, nil
}

// middleware wraps a route with the cache, or with the invalidator when the
// route does not cache, so that its unsafe requests still remove what other
// routes stored for the same URI. The server calls it for every route on
// each configuration load, and it resizes the cache only when
// l7.cache.max_size changed since the last call.
func (lc *l7Cache) middleware(cfg *config.L7, rt *config.Route, next http.Handler) (http.Handler, error) {
	if err := lc.resize(cache.ConfigFrom(cfg.Cache).MaxBytes); err != nil {
		return nil, err
	}
	p := cache.PolicyFrom(rt.Name, rt.Cache)
	if !p.Enabled {
		return lc.cache.Invalidator(next), nil
	}
	return lc.cache.Middleware(p, next), nil
}

// resize applies maxBytes when it differs from the budget in force.
//
// NOTE: a reload that fails after the middlewares ran (for example when the
// new access log cannot be opened) keeps the running configuration but
// leaves the new budget applied.
func (lc *l7Cache) resize(maxBytes int64) error {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if maxBytes == lc.maxBytes {
		return nil
	}
	if err := lc.cache.Resize(maxBytes); err != nil {
		return err
	}
	lc.maxBytes = maxBytes
	return nil
}
