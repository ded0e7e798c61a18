package cache_test

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tidegate/tidegate/l7/cache"
)

// ExampleCache_Middleware wires the cache in front of an upstream handler
// and shows a miss followed by a hit.
func ExampleCache_Middleware() {
	// A fixed clock keeps the output stable; production leaves Now nil.
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cfg := cache.Config{MaxBytes: 64 << 20, Now: func() time.Time { return now }}
	c, err := cache.New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		panic(err)
	}
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=300")
		w.Header().Set("Date", now.Format(http.TimeFormat))
		fmt.Fprint(w, "hello")
	})
	h := c.Middleware(cache.RoutePolicy{Route: "www", Enabled: true, Strict: true, Heuristic: true}, upstream)

	for range 2 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://www.example/", nil))
		fmt.Println(rec.Code, rec.Body.String(), rec.Header().Get("Cache-Status"))
	}
	// Output:
	// 200 hello tidegate; fwd=uri-miss; fwd-status=200; stored; ttl=300
	// 200 hello tidegate; hit; ttl=300
}
