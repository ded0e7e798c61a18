package l7

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tidegate/tidegate/l7/compress"
	"github.com/tidegate/tidegate/l7/passthrough"
	"github.com/tidegate/tidegate/shared/config"
)

// TestStoredHitsMatchGeneralPath serves cache hits whose stored
// heads the fast path writes as they are, and compares each with the same
// hit served by net/http. The cases are multi-line fields, a Cache-Status
// from upstream, a sniffed Content-Type, and the Vary that compression
// adds for a client that accepts no coding. Each is requested with GET,
// HEAD, Connection: close and conditionals, which take the header-map path.
func TestStoredHitsMatchGeneralPath(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "public, max-age=3600")
		h.Set("ETag", `"v1"`)
		switch r.URL.Path {
		case "/multi":
			h.Set("Content-Type", "text/plain")
			h["X-Multi"] = []string{"a", "b"}
			h.Set("Cache-Status", "origin-cache; hit")
			io.WriteString(w, "multi body")
		case "/sniff":
			h["Content-Type"] = nil
			io.WriteString(w, "<html><body>sniffed</body></html>")
		case "/text":
			h.Set("Content-Type", "text/plain")
			io.WriteString(w, strings.Repeat("compressible text ", 200))
		}
	}))
	defer backend.Close()
	comp, err := compress.New(&config.CompressPolicy{Encodings: []string{"gzip"}, GzipLevel: 1, MinSize: 1024, ContentTypes: []string{"text/plain"}}, compress.Options{})
	if err != nil {
		t.Fatal(err)
	}
	outer := WithMiddleware("compress", func(_ *config.L7, _ *config.Route, next http.Handler) (http.Handler, error) {
		return comp.Middleware(next), nil
	})
	s := startCachedL7(t, fmt.Sprintf(twoListeners, strings.TrimPrefix(backend.URL, "http://")), outer)
	addrs := s.Addrs()

	hit := func(listener, method, path, extra string) (*http.Response, string) {
		t.Helper()
		c, err := net.Dial("tcp", addrs[listener].String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: app.test\r\n%s\r\n", method, path, extra)
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(body)
	}
	for _, path := range []string{"/multi", "/sniff", "/text"} {
		hit("general", "GET", path, "") // stores it
		for _, tc := range []struct{ method, extra string }{
			{"GET", ""},
			{"HEAD", ""},
			{"GET", "Connection: close\r\n"},
			{"GET", "If-None-Match: \"v1\"\r\n"},
			{"GET", "If-None-Match: \"v2\"\r\n"},
		} {
			name := fmt.Sprintf("%s %s %q", tc.method, path, tc.extra)
			before := fastCount(t, s)
			fast, fastBody := hit("fast", tc.method, path, tc.extra)
			if fastCount(t, s) != before+1 {
				t.Errorf("%s: not served on the fast path", name)
			}
			general, generalBody := hit("general", tc.method, path, tc.extra)
			if fast.StatusCode != general.StatusCode || fastBody != generalBody {
				t.Errorf("%s: fast %d %q, net/http %d %q", name, fast.StatusCode, fastBody, general.StatusCode, generalBody)
			}
			if !strings.HasPrefix(fast.Header.Values("Cache-Status")[len(fast.Header.Values("Cache-Status"))-1], "tidegate; hit") {
				t.Errorf("%s: Cache-Status %q", name, fast.Header.Values("Cache-Status"))
			}
			for _, h := range []http.Header{fast.Header, general.Header} {
				for _, field := range []string{"Date", "X-Request-Id", "Age"} {
					if len(h.Values(field)) != 1 {
						t.Errorf("%s: %s %q, want one", name, field, h.Values(field))
					}
					h.Del(field)
				}
			}
			if !reflect.DeepEqual(fast.Header, general.Header) {
				t.Errorf("%s: fields differ:\nfast:     %v\nnet/http: %v", name, fast.Header, general.Header)
			}
		}
	}
}

func fastCount(t *testing.T, s *Server) float64 {
	t.Helper()
	return testutil.ToFloat64(s.metrics.fastRequests.WithLabelValues("fast"))
}

// TestStoredWriterBodilessStatus checks that a stored response
// with a status that has no body is written as a header-map response: no
// Content-Length and no body.
func TestStoredWriterBodilessStatus(t *testing.T) {
	w := &fastWriter{header: http.Header{"X-Request-Id": {"id"}}}
	w.WriteStored(passthrough.Stored{
		Status: http.StatusNoContent,
		Fields: []passthrough.Field{{Name: "Etag", Values: []string{`"a"`}}, {Name: "X-Request-Id", Values: []string{"stored"}}},
		Wire:   []byte("Etag: \"a\"\r\nX-Request-Id: stored\r\n"),
		Extra:  []passthrough.Field{{Name: "Content-Length", Values: []string{"4"}}},
		Body:   []byte("body"),
	})
	if w.hasStored || w.status != http.StatusNoContent {
		t.Fatalf("stored %v, status %d", w.hasStored, w.status)
	}
	x := &fastExchange{w: *w, req: h1Request{method: "GET"}}
	var out strings.Builder
	bw := bufio.NewWriter(&out)
	x.writeResponded(bw, false)
	bw.Flush()
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(out.String())), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 204 || resp.Header.Get("Content-Length") != "" || resp.Header.Get("X-Request-Id") != "stored" || resp.Header.Get("Etag") != `"a"` {
		t.Errorf("got %q", out.String())
	}
	if strings.Contains(out.String(), "body") {
		t.Errorf("204 carries a body: %q", out.String())
	}
}

// TestStoredHeadValues checks the passthrough.Head of a stored response:
// a stored name hides the header map's, extra values follow, and Add
// appends to the extra fields.
func TestStoredHeadValues(t *testing.T) {
	s := &passthrough.Stored{
		Fields: []passthrough.Field{{Name: "Vary", Values: []string{"Origin"}}},
		Extra:  []passthrough.Field{{Name: "Vary", Values: []string{"Cookie"}}},
	}
	h := &storedHead{s: s, header: http.Header{"Vary": {"hidden"}, "X-Map": {"m"}}}
	if got := h.Values("vary"); !reflect.DeepEqual(got, []string{"Origin", "Cookie"}) {
		t.Errorf("Values(vary) = %q", got)
	}
	if got := h.Get("X-Map"); got != "m" {
		t.Errorf("Get(X-Map) = %q", got)
	}
	h.Add("x-new", "v")
	if got := h.Get("X-New"); got != "v" {
		t.Errorf("after Add, Get(X-New) = %q", got)
	}
	if got := s.Fields[0].Values; !reflect.DeepEqual(got, []string{"Origin"}) {
		t.Errorf("stored values changed: %q", got)
	}
}

// BenchmarkWriteStored writes a stored cache hit the way serveRequest
// does: an exchange from the pool, WriteStored, writeResponded into a
// buffered writer, release.
func BenchmarkWriteStored(b *testing.B) {
	fields := []passthrough.Field{
		{Name: "Cache-Control", Values: []string{"public, max-age=3600"}},
		{Name: "Content-Type", Values: []string{"text/plain"}},
		{Name: "Date", Values: []string{"Sat, 05 Dec 2026 02:00:00 GMT"}},
		{Name: "Etag", Values: []string{`"v1"`}},
	}
	var wire []byte
	for _, f := range fields {
		wire = appendField(wire, f.Name, f.Values[0])
	}
	body := []byte(strings.Repeat("c", 128))
	extra := []passthrough.Field{
		{Name: "Age", Values: []string{"0"}},
		{Name: "Cache-Status", Values: []string{"tidegate; hit; ttl=3599"}},
		{Name: "Content-Length", Values: []string{"128"}},
	}
	bw := bufio.NewWriter(io.Discard)
	b.ReportAllocs()
	for b.Loop() {
		x := fastStates.Get().(*fastExchange)
		x.req.method = "GET"
		if x.w.header == nil {
			x.w.header = http.Header{}
		}
		clear(x.w.header)
		x.w.status = 0
		x.w.header["X-Request-Id"] = []string{"id"}
		x.w.WriteStored(passthrough.Stored{Status: http.StatusOK, Fields: fields, Wire: wire, Extra: extra[:3:3], Body: body})
		if !x.writeResponded(bw, false) {
			b.Fatal("writeResponded closed the connection")
		}
		x.release()
	}
}
