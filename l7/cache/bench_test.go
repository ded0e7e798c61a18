package cache

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// BenchmarkStoreGet measures a lookup in a store of 10,000 entries.
func BenchmarkStoreGet(b *testing.B) {
	s := newStore(1<<30, nil)
	h := http.Header{"Accept-Encoding": {"gzip, deflate, br"}}
	req := httptestRequest(http.MethodGet, "Accept-Encoding", h.Get("Accept-Encoding"))
	resp := header("Date", httpDate(t0), "Cache-Control", "max-age=60", "Vary", "Accept-Encoding")
	for i := range 10000 {
		k := requestKey{primary: fmt.Sprintf("GET http://example.com/item/%d", i)}
		s.insert(newEntry(k, req, 200, resp.Clone(), make([]byte, 512), newTiming(resp, t0, t0), testStorePolicy))
	}
	k := requestKey{primary: "GET http://example.com/item/4242"}
	b.ReportAllocs()
	for b.Loop() {
		if e, _ := s.get(k, h, false); e == nil {
			b.Fatal("miss")
		}
	}
}

// BenchmarkBuildKey measures computing the key of a typical request.
func BenchmarkBuildKey(b *testing.B) {
	r := httptest.NewRequest(http.MethodGet, "http://example.com/static/app.js?v=123", nil)
	parts := parseKeyParts([]string{"cookie:tenant"})
	r.Header.Set("Cookie", "a=1; tenant=acme")
	b.ReportAllocs()
	for b.Loop() {
		_ = buildKey(r, parts)
	}
}

// BenchmarkServeHit measures the middleware serving a fresh hit of 4 KiB,
// without network I/O.
func BenchmarkServeHit(b *testing.B) {
	c, err := New(Config{MaxBytes: 64 << 20}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	body := strings.Repeat("x", 4096)
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Header().Set("Content-Type", "application/javascript")
		w.Header().Set("Vary", "Accept-Encoding")
		w.Header().Set("Date", time.Now().UTC().Format(http.TimeFormat))
		io.WriteString(w, body)
	})
	h := c.Middleware(RoutePolicy{Route: "bench", Enabled: true, Strict: true, Heuristic: true}, upstream)
	req := httptest.NewRequest(http.MethodGet, "http://example.com/static/app.js", nil)
	req.Header.Set("Accept-Encoding", "gzip, br")
	h.ServeHTTP(httptest.NewRecorder(), req)

	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 || rec.Body.Len() != len(body) {
			b.Fatalf("status %d, %d bytes", rec.Code, rec.Body.Len())
		}
	}
}

// BenchmarkParseCacheControl measures parsing a typical response field.
func BenchmarkParseCacheControl(b *testing.B) {
	h := http.Header{"Cache-Control": {`public, max-age=300, s-maxage=600, stale-while-revalidate=30, private="Set-Cookie"`}}
	b.ReportAllocs()
	for b.Loop() {
		_ = parseCacheControl(h)
	}
}
