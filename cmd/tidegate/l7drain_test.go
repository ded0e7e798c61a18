package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidegate/tidegate/l7"
	"github.com/tidegate/tidegate/shared/admin"
	"github.com/tidegate/tidegate/shared/config"
)

// TestL7DrainWaitsForRefresh checks that Drain lets a
// stale-while-revalidate refresh that is still running finish and store
// its response before the server stops.
func TestL7DrainWaitsForRefresh(t *testing.T) {
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseRefresh := func() { releaseOnce.Do(func() { close(release) }) }
	var requests atomic.Int64
	refreshStarted := make(chan struct{})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) == 2 {
			// The second request is the background refresh.
			close(refreshStarted)
			<-release
		}
		// A max-age of 0 makes the stored response stale at once.
		w.Header().Set("Cache-Control", "max-age=0, stale-while-revalidate=600")
		_, _ = io.WriteString(w, "page")
	}))
	defer backend.Close()
	defer releaseRefresh()

	srv, adm := startL7Service(t, fmt.Sprintf(`
l7:
  listeners:
    - {name: web, address: "127.0.0.1:0"}
  routes:
    - {name: pages, upstream: app, cache: {enabled: true}}
  upstreams:
    - {name: app, backends: [{address: %q}]}
  access_log: {path: "off"}
`, strings.TrimPrefix(backend.URL, "http://")))
	addr := srv.Addrs()["web"].String()
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	for i := range 2 {
		resp, err := client.Get("http://" + addr + "/page")
		if err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	<-refreshStarted
	client.CloseIdleConnections()

	// Release the refresh only once Drain has closed the listener, so a
	// Drain that does not wait returns before the refresh is stored.
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		drained <- srv.Drain(ctx)
	}()
	go func() {
		for {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				releaseRefresh()
				return
			}
			c.Close()
			time.Sleep(5 * time.Millisecond)
		}
	}()

	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
	if stored := storedResponses(t, adm); stored != 2 {
		t.Errorf("responses stored when drain returned = %v, want 2 (the first and the refresh)", stored)
	}
}

// storedResponses returns the sum of the cache's stored-responses counter.
func storedResponses(t *testing.T, adm *admin.Server) float64 {
	t.Helper()
	families, err := adm.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range families {
		if mf.GetName() != "tidegate_l7_cache_stored_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// startL7Service builds the L7 from yaml as the binary does, with the
// binary's middlewares, and starts it. The admin server holds its metrics.
func startL7Service(t *testing.T, yaml string) (*l7.Server, *admin.Server) {
	t.Helper()
	f, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	adm := admin.New("", false, logger)
	svc, err := newL7(f, logger, adm)
	if err != nil {
		t.Fatal(err)
	}
	srv := svc.(*l7.Server)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	return srv, adm
}
