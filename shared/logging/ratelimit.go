package logging

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// RateLimited wraps a handler so that one message at one level is written
// at most burst times per interval. The first record after a quiet interval
// carries "suppressed" with the count of records dropped before it. Records
// are keyed by level and message only, so callers keep variable data in
// attributes.
func RateLimited(h slog.Handler, burst int, interval time.Duration) slog.Handler {
	return &rateLimited{next: h, burst: burst, interval: interval, state: &limiterState{seen: map[limitKey]*window{}}}
}

type limitKey struct {
	level slog.Level
	msg   string
}

type window struct {
	start      time.Time
	count      int
	suppressed int
}

type limiterState struct {
	mu   sync.Mutex
	seen map[limitKey]*window
}

type rateLimited struct {
	next     slog.Handler
	burst    int
	interval time.Duration
	state    *limiterState
}

// maxKeys bounds the limiter's memory. When it is reached, every window is
// forgotten at once.
const maxKeys = 4096

func (h *rateLimited) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *rateLimited) Handle(ctx context.Context, r slog.Record) error {
	k := limitKey{r.Level, r.Message}
	h.state.mu.Lock()
	w := h.state.seen[k]
	if w == nil {
		if len(h.state.seen) >= maxKeys {
			clear(h.state.seen)
		}
		w = &window{start: r.Time}
		h.state.seen[k] = w
	}
	if r.Time.Sub(w.start) >= h.interval {
		w.start, w.count = r.Time, 0
	}
	w.count++
	if w.count > h.burst {
		w.suppressed++
		h.state.mu.Unlock()
		return nil
	}
	suppressed := w.suppressed
	w.suppressed = 0
	h.state.mu.Unlock()

	if suppressed > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", suppressed))
	}
	return h.next.Handle(ctx, r)
}

func (h *rateLimited) WithAttrs(as []slog.Attr) slog.Handler {
	return &rateLimited{next: h.next.WithAttrs(as), burst: h.burst, interval: h.interval, state: h.state}
}

func (h *rateLimited) WithGroup(name string) slog.Handler {
	return &rateLimited{next: h.next.WithGroup(name), burst: h.burst, interval: h.interval, state: h.state}
}
