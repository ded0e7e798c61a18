package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// fastCacheConfig has a listener on the fast path and one on net/http,
// a cached route with response header rules and a cached route with
// compression, which the binary places between the cache and the backend.
const fastCacheConfig = `
l7:
  access_log: {path: "off"}
  listeners:
    - {name: fast, address: "127.0.0.1:0"}
    - {name: general, address: "127.0.0.2:0", fast_path: false}
  routes:
    - name: rewritten
      upstream: app
      match: {path_prefix: /rw/}
      cache: {enabled: true}
      policy:
        rewrite:
          response_headers:
            add: {X-Added: "yes"}
            set: {X-Set: "new"}
            remove: [X-Remove]
    - name: compressed
      upstream: app
      match: {path_prefix: /gz/}
      cache: {enabled: true}
      policy:
        compress: {encodings: [gzip], min_size: 16, content_types: [text/plain]}
    - name: plain
      upstream: app
      cache: {enabled: true}
  upstreams:
    - {name: app, backends: [{address: %q}]}
`

// TestL7FastCacheHitsApplyRoutePolicy stores responses on routes with
// response header rules and with compression in the binary's middleware
// chain, and checks that hits on the fast-path listener get the same
// fields and body as hits on the net/http listener.
func TestL7FastCacheHitsApplyRoutePolicy(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "max-age=3600")
		h.Set("Content-Type", "text/plain")
		h.Set("X-Remove", "secret")
		h.Set("X-Set", "old")
		_, _ = io.WriteString(w, strings.Repeat("cached text ", 20))
	}))
	defer backend.Close()
	srv, adm := startL7Service(t, fmt.Sprintf(fastCacheConfig, strings.TrimPrefix(backend.URL, "http://")))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Drain(ctx)
	})
	addrs := srv.Addrs()

	get := func(listener, method, path, extra string) (*http.Response, string) {
		t.Helper()
		c, err := net.Dial("tcp", addrs[listener].String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n%s\r\n", method, path, extra)
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
		if err != nil {
			t.Fatalf("%s %s on %s: %v", method, path, listener, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s on %s: read body: %v", method, path, listener, err)
		}
		return resp, string(body)
	}
	ttl := regexp.MustCompile(`ttl=-?[0-9]+`)
	shared := func(h http.Header) http.Header {
		out := h.Clone()
		out.Del("Date")
		out.Del("X-Request-Id")
		out.Del("Age")
		for i, v := range out["Cache-Status"] {
			out["Cache-Status"][i] = ttl.ReplaceAllString(v, "ttl=N")
		}
		return out
	}

	// A route with rewrites needs the general server. On a cached route
	// the fast path meets the cache before compression, so it serves fresh
	// hits whatever encodings the client accepts.
	for _, tc := range []struct {
		path, extra string
		onFast      bool
	}{
		{"/rw/a", "", false},
		{"/gz/a", "Accept-Encoding: gzip\r\n", true},
		{"/gz/a", "", true},
		{"/plain", "", true},
	} {
		get("general", "GET", tc.path, tc.extra) // stores the response
		for _, method := range []string{"GET", "HEAD"} {
			name := fmt.Sprintf("%s %s %q", method, tc.path, tc.extra)
			before := fastServed(t, adm.Registry)
			fast, fastBody := get("fast", method, tc.path, tc.extra)
			if onFast := fastServed(t, adm.Registry) == before+1; onFast != tc.onFast {
				t.Errorf("%s: served on the fast path %v, want %v", name, onFast, tc.onFast)
			}
			general, generalBody := get("general", method, tc.path, tc.extra)
			if cs := fast.Header.Values("Cache-Status"); len(cs) == 0 || !strings.HasPrefix(cs[len(cs)-1], "tidegate; hit") {
				t.Errorf("%s: fast Cache-Status %q, want a hit", name, cs)
			}
			if fast.StatusCode != general.StatusCode || fastBody != generalBody {
				t.Errorf("%s: fast %d %q, net/http %d %q", name, fast.StatusCode, fastBody, general.StatusCode, generalBody)
			}
			if got, want := shared(fast.Header), shared(general.Header); !reflect.DeepEqual(got, want) {
				t.Errorf("%s: fields differ:\nfast:     %v\nnet/http: %v", name, got, want)
			}
			if strings.HasPrefix(tc.path, "/rw/") {
				for field, want := range map[string][]string{"X-Added": {"yes"}, "X-Set": {"new"}, "X-Remove": nil} {
					if got := fast.Header.Values(field); !reflect.DeepEqual(got, want) {
						t.Errorf("%s: fast %s %q, want %q", name, field, got, want)
					}
				}
			}
		}
	}
}

// fastServed returns tidegate_l7_fast_path_requests_total of the listener
// named fast.
func fastServed(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != "tidegate_l7_fast_path_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "listener" && l.GetValue() == "fast" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
