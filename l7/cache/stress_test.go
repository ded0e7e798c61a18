package cache

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestMiddlewareConcurrentMixedLoad runs hits, misses, revalidations,
// invalidations, purges and evictions from several goroutines at once, so
// that the race detector sees the shared paths, and then checks the
// store's accounting.
func TestMiddlewareConcurrentMixedLoad(t *testing.T) {
	clock := newTestClock()
	var version atomic.Int64
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			version.Add(1)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		etag := fmt.Sprintf(`"%d"`, version.Load())
		w.Header().Set("Date", clock.Now().Format(http.TimeFormat))
		w.Header().Set("ETag", etag)
		w.Header().Set("Vary", "Accept-Encoding")
		w.Header().Set("Cache-Control", "max-age=2, stale-while-revalidate=2, stale-if-error=5")
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		fmt.Fprint(w, strings.Repeat("z", 2000))
	})
	c, err := New(Config{MaxBytes: 40 << 10, Now: clock.Now}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := c.Middleware(defaultPolicy(), upstream)
	purge := c.PurgeHandler()

	iterations := 300
	if testing.Short() {
		iterations = 50
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range iterations {
				path := fmt.Sprintf("/p/%d", (g*7+i)%25)
				var req *http.Request
				switch i % 10 {
				case 0:
					req = httptest.NewRequest(http.MethodPost, "http://h"+path, nil)
				case 1:
					req = httptest.NewRequest(http.MethodPost, "http://admin/cache/purge?prefix=h/p/1", nil)
					purge.ServeHTTP(httptest.NewRecorder(), req)
					continue
				case 2:
					clock.Advance(time.Second)
					req = httptest.NewRequest(http.MethodHead, "http://h"+path, nil)
				default:
					req = httptest.NewRequest(http.MethodGet, "http://h"+path, nil)
				}
				if i%3 == 0 {
					req.Header.Set("Accept-Encoding", "gzip")
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code >= 500 {
					t.Errorf("%s %s: status %d", req.Method, path, rec.Code)
				}
			}
		})
	}
	wg.Wait()
	c.Wait()

	size, entries := c.Stats()
	if size < 0 || size > 40<<10 {
		t.Errorf("size = %d, want 0..%d", size, 40<<10)
	}
	var counted int64
	var n int
	c.store.mu.Lock()
	for _, variants := range c.store.byKey {
		for _, e := range variants {
			counted += e.size
			n++
		}
	}
	lruLen := c.store.lru.Len()
	c.store.mu.Unlock()
	if counted != size || n != entries || lruLen != entries {
		t.Errorf("accounting: map holds %d entries of %d bytes, LRU %d, stats %d entries of %d bytes", n, counted, lruLen, entries, size)
	}
}
