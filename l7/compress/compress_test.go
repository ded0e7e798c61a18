package compress

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tidegate/tidegate/shared/config"
)

func defaultPolicy() *config.CompressPolicy {
	return &config.CompressPolicy{
		Encodings:    []string{"zstd", "br", "gzip"},
		GzipLevel:    config.DefaultGzipLevel,
		BrotliLevel:  config.DefaultBrotliLevel,
		ZstdLevel:    config.DefaultZstdLevel,
		ZstdWindow:   config.DefaultZstdWindow,
		MinSize:      config.DefaultCompressMinSize,
		ContentTypes: config.DefaultCompressTypes,
	}
}

// testBody is compressible text with random words, so a decoder bug cannot
// hide behind a repeated pattern.
func testBody(n int) []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	words := []string{"alpha", "beta", "gamma", "delta", "\"key\":", "[1,2,3]", "\n", "tidegate"}
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[rng.IntN(len(words))])
		b.WriteByte(byte('a' + rng.IntN(26)))
	}
	return b.Bytes()[:n]
}

func newServer(t *testing.T, reg prometheus.Registerer, h http.Handler) *httptest.Server {
	t.Helper()
	c, err := New(defaultPolicy(), Options{Route: "r", Registerer: reg})
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	srv := httptest.NewServer(c.Middleware(h))
	t.Cleanup(srv.Close)
	return srv
}

// rawGet sends a request without the transport's own gzip handling and
// returns the response with its body undecoded.
func rawGet(t *testing.T, method, url string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, body
}

func decode(t *testing.T, encoding string, body []byte) []byte {
	t.Helper()
	var r io.Reader
	switch encoding {
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("gzip reader: %v", err)
		}
		r = zr
	case "br":
		r = brotli.NewReader(bytes.NewReader(body))
	case "zstd":
		zr, err := zstd.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("zstd reader: %v", err)
		}
		defer zr.Close()
		r = zr
	default:
		t.Fatalf("unknown encoding %q", encoding)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decode %s: %v", encoding, err)
	}
	return out
}

func TestCompressRoundTrip(t *testing.T) {
	want := testBody(200 << 10)
	reg := prometheus.NewRegistry()
	srv := newServer(t, reg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("ETag", `"v1"`)
		if r.URL.Path == "/sized" {
			w.Header().Set("Content-Length", fmt.Sprint(len(want)))
		}
		// Write in uneven pieces to exercise buffering.
		for rest := want; len(rest) > 0; {
			n := min(len(rest), 777)
			w.Write(rest[:n])
			rest = rest[n:]
		}
	}))
	for _, enc := range []string{"gzip", "br", "zstd"} {
		for _, path := range []string{"/sized", "/streamed"} {
			t.Run(enc+path, func(t *testing.T) {
				// Run twice so the second response uses a pooled encoder.
				for range 2 {
					resp, body := rawGet(t, "GET", srv.URL+path, http.Header{"Accept-Encoding": {enc}})
					if got := resp.Header.Get("Content-Encoding"); got != enc {
						t.Fatalf("Content-Encoding = %q, want %q", got, enc)
					}
					if got := resp.Header.Get("Vary"); got != "Accept-Encoding" {
						t.Errorf("Vary = %q, want Accept-Encoding", got)
					}
					if resp.ContentLength != -1 {
						t.Errorf("Content-Length = %d, want none", resp.ContentLength)
					}
					if got := resp.Header.Get("ETag"); got != `W/"v1"` {
						t.Errorf("ETag = %q, want W/\"v1\"", got)
					}
					if len(body) >= len(want) {
						t.Errorf("encoded size %d is not below the original %d", len(body), len(want))
					}
					if got := decode(t, enc, body); !bytes.Equal(got, want) {
						t.Errorf("decoded %d bytes differ from the %d backend bytes", len(got), len(want))
					}
				}
			})
		}
	}
	if v := testutil.ToFloat64(responsesCounter(reg, "r", "zstd")); v != 4 {
		t.Errorf("zstd responses metric = %v, want 4", v)
	}
}

// responsesCounter returns the responses counter of route and encoding.
func responsesCounter(reg prometheus.Registerer, route, encoding string) prometheus.Counter {
	return newMetrics(reg, route).responses.WithLabelValues(encoding)
}

func TestCompressNegotiatedOverHTTP(t *testing.T) {
	srv := newServer(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write(testBody(4096))
	}))
	tests := []struct {
		accept string
		want   string
	}{
		{"gzip, deflate, br, zstd", "zstd"},
		{"gzip;q=0.5, br;q=0.8", "br"},
		{"gzip, zstd;q=0", "gzip"},
		{"*", "zstd"},
		{"*;q=0.1, gzip", "gzip"},
		{"identity", ""},
		{"deflate", ""},
		{"br;q=0", ""},
	}
	for _, tc := range tests {
		t.Run(tc.accept, func(t *testing.T) {
			resp, body := rawGet(t, "GET", srv.URL, http.Header{"Accept-Encoding": {tc.accept}})
			if got := resp.Header.Get("Content-Encoding"); got != tc.want {
				t.Fatalf("Content-Encoding = %q, want %q", got, tc.want)
			}
			if resp.Header.Get("Vary") != "Accept-Encoding" {
				t.Errorf("Vary = %q, want Accept-Encoding", resp.Header.Get("Vary"))
			}
			want := testBody(4096)
			if tc.want != "" {
				body = decode(t, tc.want, body)
			}
			if !bytes.Equal(body, want) {
				t.Errorf("body differs from the backend's")
			}
		})
	}
}

func TestCompressSkips(t *testing.T) {
	big := testBody(8192)
	tests := []struct {
		name    string
		method  string
		reqHdr  http.Header
		status  int
		respHdr map[string]string
		body    []byte
		vary    bool
	}{
		{"small with length", "GET", nil, 200, map[string]string{"Content-Type": "text/plain", "Content-Length": "100"}, big[:100], true},
		{"small streamed", "GET", nil, 200, map[string]string{"Content-Type": "text/plain"}, big[:100], true},
		{"type not listed", "GET", nil, 200, map[string]string{"Content-Type": "image/png"}, big, false},
		{"no content type", "GET", nil, 200, nil, big, false},
		{"already encoded", "GET", nil, 200, map[string]string{"Content-Type": "text/plain", "Content-Encoding": "gzip"}, big, false},
		{"partial", "GET", nil, 206, map[string]string{"Content-Type": "text/plain", "Content-Range": "bytes 0-8191/20000"}, big, false},
		{"range request", "GET", http.Header{"Range": {"bytes=0-"}}, 200, map[string]string{"Content-Type": "text/plain"}, big, false},
		{"no transform", "GET", nil, 200, map[string]string{"Content-Type": "text/plain", "Cache-Control": "public, no-transform"}, big, false},
		{"event stream", "GET", nil, 200, map[string]string{"Content-Type": "text/event-stream"}, big, false},
		{"no content", "GET", nil, 204, map[string]string{"Content-Type": "text/plain"}, nil, false},
		{"not modified", "GET", nil, 304, map[string]string{"Content-Type": "text/plain", "ETag": `"x"`}, nil, false},
		{"head", "HEAD", nil, 200, map[string]string{"Content-Type": "text/plain", "Content-Length": "8192"}, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tc.respHdr {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
				w.Write(tc.body)
			}))
			hdr := http.Header{"Accept-Encoding": {"gzip, br, zstd"}}
			for k, v := range tc.reqHdr {
				hdr[k] = v
			}
			resp, body := rawGet(t, tc.method, srv.URL, hdr)
			if resp.StatusCode != tc.status {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tc.status)
			}
			if got, want := resp.Header.Get("Content-Encoding"), tc.respHdr["Content-Encoding"]; got != want {
				t.Errorf("Content-Encoding = %q, want %q", got, want)
			}
			if got := resp.Header.Get("Vary") == "Accept-Encoding"; got != tc.vary {
				t.Errorf("Vary: Accept-Encoding present = %v, want %v", got, tc.vary)
			}
			if tc.method != "HEAD" && !bytes.Equal(body, tc.body) {
				t.Errorf("body (%d bytes) differs from the backend's (%d bytes)", len(body), len(tc.body))
			}
		})
	}
}

// TestEventStreamFlushed checks that each server-sent event reaches the
// client before the handler produces the next one. The handler waits for
// the client's acknowledgement, so a held-back event would deadlock and
// the test would fail at its deadline.
func TestEventStreamFlushed(t *testing.T) {
	ack := make(chan struct{})
	const events = 5
	srv := newServer(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range events {
			fmt.Fprintf(w, "id: %d\ndata: %s\n\n", i, strings.Repeat("x", 600))
			http.NewResponseController(w).Flush()
			select {
			case <-ack:
			case <-r.Context().Done():
				return
			}
		}
	}))
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("Accept-Encoding", "gzip, br, zstd")
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	if ce := resp.Header.Get("Content-Encoding"); ce != "" {
		t.Fatalf("event stream has Content-Encoding %q", ce)
	}
	br := bufio.NewReader(resp.Body)
	for i := range events {
		got := make(chan string, 1)
		go func() {
			line, _ := br.ReadString('\n')
			br.ReadString('\n')
			br.ReadString('\n')
			got <- line
		}()
		select {
		case line := <-got:
			if line != fmt.Sprintf("id: %d\n", i) {
				t.Fatalf("event %d starts with %q", i, line)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("event %d did not arrive before the next was produced", i)
		}
		ack <- struct{}{}
	}
}

// TestCompressedStreamFlushed checks that a flush inside a compressed
// stream delivers decodable bytes before the handler continues.
func TestCompressedStreamFlushed(t *testing.T) {
	ack := make(chan struct{})
	part := testBody(2048)
	srv := newServer(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		for range 3 {
			w.Write(part)
			http.NewResponseController(w).Flush()
			select {
			case <-ack:
			case <-r.Context().Done():
				return
			}
		}
	}))
	for _, enc := range []string{"gzip", "br", "zstd"} {
		t.Run(enc, func(t *testing.T) {
			req, _ := http.NewRequest("GET", srv.URL, nil)
			req.Header.Set("Accept-Encoding", enc)
			client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			defer resp.Body.Close()
			if ce := resp.Header.Get("Content-Encoding"); ce != enc {
				t.Fatalf("Content-Encoding = %q, want %q", ce, enc)
			}
			var dec io.Reader
			switch enc {
			case "gzip":
				zr, err := gzip.NewReader(resp.Body)
				if err != nil {
					t.Fatalf("gzip reader: %v", err)
				}
				dec = zr
			case "br":
				dec = brotli.NewReader(resp.Body)
			case "zstd":
				zr, err := zstd.NewReader(resp.Body)
				if err != nil {
					t.Fatalf("zstd reader: %v", err)
				}
				defer zr.Close()
				dec = zr
			}
			for i := range 3 {
				got := make([]byte, len(part))
				done := make(chan error, 1)
				go func() {
					_, err := io.ReadFull(dec, got)
					done <- err
				}()
				select {
				case err := <-done:
					if err != nil {
						t.Fatalf("part %d: %v", i, err)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("part %d did not arrive before the next was produced", i)
				}
				if !bytes.Equal(got, part) {
					t.Fatalf("part %d differs", i)
				}
				ack <- struct{}{}
			}
		})
	}
}

func TestVaryMerged(t *testing.T) {
	srv := newServer(t, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Vary", "Origin")
		w.Write(testBody(4096))
	}))
	resp, _ := rawGet(t, "GET", srv.URL, http.Header{"Accept-Encoding": {"gzip"}})
	if got := resp.Header.Values("Vary"); strings.Join(got, ",") != "Origin,Accept-Encoding" {
		t.Errorf("Vary = %q, want Origin and Accept-Encoding", got)
	}
}

func TestTypeAllowed(t *testing.T) {
	c, err := New(defaultPolicy(), Options{})
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	tests := map[string]bool{
		"text/html; charset=utf-8":      true,
		"TEXT/CSS":                      true,
		"application/json":              true,
		"application/problem+json":      true,
		"application/atom+xml":          true,
		"image/svg+xml":                 true,
		"image/png":                     false,
		"application/octet-stream":      false,
		"application/jsonx":             false,
		"not a type":                    false,
		"application/vnd.api+json;v=1":  true,
		"application/x-www-form-urlenc": false,
	}
	for ct, want := range tests {
		if got := c.typeAllowed(ct); got != want {
			t.Errorf("typeAllowed(%q) = %v, want %v", ct, got, want)
		}
	}
}

// TestCompressibleTypeCache looks up more Content-Type values than the
// cache keeps, twice, and checks that every verdict is right and that the
// cache stops growing.
func TestCompressibleTypeCache(t *testing.T) {
	c, err := New(defaultPolicy(), Options{})
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	for round := range 2 {
		for i := range 2 * maxKnownTypes {
			ct := fmt.Sprintf("text/html; v=%d", i)
			if !c.compressibleType(ct) {
				t.Fatalf("round %d: compressibleType(%q) = false, want true", round, ct)
			}
		}
		for ct, want := range map[string]bool{"text/event-stream": false, "image/png": false, "not a type": false, "application/json": true} {
			if got := c.compressibleType(ct); got != want {
				t.Errorf("round %d: compressibleType(%q) = %v, want %v", round, ct, got, want)
			}
		}
	}
	if n := len(*c.known.Load()); n != maxKnownTypes {
		t.Errorf("cache holds %d values, want %d", n, maxKnownTypes)
	}
}

// BenchmarkMiddleware compresses a 64KiB JSON body per encoding through the
// middleware, so allocations show whether pooled encoders are reused.
func BenchmarkMiddleware(b *testing.B) {
	body := testBody(64 << 10)
	c, err := New(defaultPolicy(), Options{Route: "bench"})
	if err != nil {
		b.Fatalf("New() error = %v", err)
	}
	h := c.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	for _, enc := range []string{"gzip", "br", "zstd"} {
		b.Run(enc, func(b *testing.B) {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("Accept-Encoding", enc)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Header().Get("Content-Encoding") != enc {
					b.Fatalf("Content-Encoding = %q", w.Header().Get("Content-Encoding"))
				}
			}
		})
	}
}

// TestCompressFlushedBeforeMinSize covers a chunked body flushed in pieces
// smaller than the minimum size, as httputil.ReverseProxy flushes a backend
// response without Content-Length: it is still encoded.
func TestCompressFlushedBeforeMinSize(t *testing.T) {
	want := testBody(8 << 10)
	srv := newServer(t, prometheus.NewRegistry(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		for rest := want; len(rest) > 0; {
			n := min(len(rest), 100)
			w.Write(rest[:n])
			http.NewResponseController(w).Flush()
			rest = rest[n:]
		}
	}))
	for _, enc := range []string{"gzip", "br", "zstd"} {
		resp, body := rawGet(t, "GET", srv.URL+"/", http.Header{"Accept-Encoding": {enc}})
		if got := resp.Header.Get("Content-Encoding"); got != enc {
			t.Errorf("%s: Content-Encoding = %q, want %q", enc, got, enc)
			continue
		}
		if got := decode(t, enc, body); !bytes.Equal(got, want) {
			t.Errorf("%s: decoded %d bytes that differ from the %d sent", enc, len(got), len(want))
		}
	}
}
