package l7

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"weak"

	"github.com/tidegate/tidegate/l7/passthrough"
)

// These tests store responses from hostile or unusual backends in the
// cache and compare the hits that the fast path writes from the stored
// wire head with the same hits written by net/http.

// cannedResponse is a raw backend response. closeAfter makes the backend
// close the connection after writing it.
type cannedResponse struct {
	raw        string
	closeAfter bool
}

// cannedBackend serves the response in responses that matches the request
// path, without the body for HEAD, and counts the requests per path.
func cannedBackend(t *testing.T, responses map[string]cannedResponse, counts map[string]*atomic.Int32) string {
	t.Helper()
	return rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		for {
			line := readRequestHead(r)
			if line == "" {
				return
			}
			method, path, _ := strings.Cut(line, " ")
			path, _, _ = strings.Cut(path, " ")
			if n := counts[path]; n != nil {
				n.Add(1)
			}
			resp, ok := responses[path]
			if !ok {
				resp = cannedResponse{raw: "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"}
			}
			raw := resp.raw
			if method == "HEAD" {
				head, _, _ := strings.Cut(raw, "\r\n\r\n")
				raw = head + "\r\n\r\n"
			}
			if _, err := c.Write([]byte(raw)); err != nil || resp.closeAfter {
				return
			}
		}
	})
}

// wireResponse is a response as it came off the wire.
type wireResponse struct {
	statusLine string
	fields     []string // "Name: value", in wire order
	body       string
}

func (r wireResponse) values(name string) []string {
	var out []string
	for _, f := range r.fields {
		n, v, _ := strings.Cut(f, ":")
		if strings.EqualFold(n, name) {
			out = append(out, strings.TrimSpace(v))
		}
	}
	return out
}

// parseWire splits raw, one response on a closed connection, into its
// parts and checks its framing: every head line ends in CRLF, no field
// has an empty name, Content-Length and Content-Type appear at most once
// and Content-Length matches the body.
func parseWire(t *testing.T, name, raw string, head bool) wireResponse {
	t.Helper()
	h, body, ok := strings.Cut(raw, "\r\n\r\n")
	if !ok {
		t.Fatalf("%s: no end of head in %q", name, raw)
	}
	lines := strings.Split(h, "\r\n")
	for _, l := range lines {
		if strings.ContainsAny(l, "\r\n") {
			t.Errorf("%s: head line %q has a bare CR or LF", name, l)
		}
	}
	r := wireResponse{statusLine: lines[0], fields: lines[1:], body: body}
	for _, f := range r.fields {
		n, _, ok := strings.Cut(f, ":")
		if !ok || n == "" || strings.TrimSpace(n) != n {
			t.Errorf("%s: invalid field line %q", name, f)
		}
	}
	for _, single := range []string{"Content-Length", "Content-Type", "Date", "Age", "Connection"} {
		if v := r.values(single); len(v) > 1 {
			t.Errorf("%s: %s sent %d times: %q", name, single, len(v), v)
		}
	}
	if cl := r.values("Content-Length"); len(cl) == 1 && !head && cl[0] != fmt.Sprint(len(body)) {
		t.Errorf("%s: Content-Length %s with a body of %d bytes", name, cl[0], len(body))
	}
	return r
}

// ttlMember matches the ttl member of Cache-Status, which changes when a
// second passes between the two hits that a test compares.
var ttlMember = regexp.MustCompile(`ttl=-?[0-9]+`)

// sharedFields returns the field lines of r that should be equal on both
// paths, sorted: all but Date, X-Request-Id and Age, which belong to each
// response, with the ttl of Cache-Status masked.
func (r wireResponse) sharedFields() []string {
	var out []string
	for _, f := range r.fields {
		n, _, _ := strings.Cut(f, ":")
		switch strings.ToLower(n) {
		case "date", "x-request-id", "age":
			continue
		}
		out = append(out, ttlMember.ReplaceAllString(f, "ttl=N"))
	}
	slices.Sort(out)
	return out
}

// isHit reports whether the last Cache-Status member of r is a hit.
func (r wireResponse) isHit() bool {
	cs := r.values("Cache-Status")
	return len(cs) > 0 && strings.HasPrefix(cs[len(cs)-1], "tidegate; hit")
}

const maxAgeHour = "Cache-Control: max-age=3600\r\n"
const lastModified = "Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n"

func TestFastPathStoredHitsHostileBackends(t *testing.T) {
	tests := []struct {
		name    string
		resp    cannedResponse
		request string // extra request fields
		hit     bool
	}{
		{name: "names differing in case", resp: cannedResponse{raw: "HTTP/1.1 200 OK\r\n" + maxAgeHour + "x-a: 1\r\nX-A: 2\r\nContent-Length: 2\r\n\r\nok"}, hit: true},
		{name: "set-cookie", resp: cannedResponse{raw: "HTTP/1.1 200 OK\r\n" + maxAgeHour + "Set-Cookie: s=1\r\nContent-Length: 2\r\n\r\nok"}},
		{name: "backend age", resp: cannedResponse{raw: "HTTP/1.1 200 OK\r\n" + maxAgeHour + "Age: 100\r\nContent-Length: 2\r\n\r\nok"}, hit: true},
		{name: "invalid date", resp: cannedResponse{raw: "HTTP/1.1 200 OK\r\n" + maxAgeHour + "Date: yesterday\r\nContent-Length: 2\r\n\r\nok"}, hit: true},
		{name: "valid date", resp: cannedResponse{raw: "HTTP/1.1 200 OK\r\n" + maxAgeHour + "Date: " + time.Now().UTC().Format(time.RFC1123[:len(time.RFC1123)-3]+"GMT") + "\r\nContent-Length: 2\r\n\r\nok"}, hit: true},
		{name: "empty content-type", resp: cannedResponse{raw: "HTTP/1.1 200 OK\r\n" + maxAgeHour + "Content-Type:\r\nContent-Length: 6\r\n\r\n<html>"}, hit: true},
		{name: "vary star", resp: cannedResponse{raw: "HTTP/1.1 200 OK\r\n" + maxAgeHour + "Vary: *\r\nContent-Length: 2\r\n\r\nok"}},
		{name: "vary accept-encoding", resp: cannedResponse{raw: "HTTP/1.1 200 OK\r\n" + maxAgeHour + "Vary: Accept-Encoding\r\nContent-Length: 2\r\n\r\nok"}, request: "Accept-Encoding: gzip\r\n", hit: true},
		{name: "vary several names", resp: cannedResponse{raw: "HTTP/1.1 200 OK\r\n" + maxAgeHour + "Vary: Accept-Encoding, X-B\r\nvary: x-c\r\nContent-Length: 2\r\n\r\nok"}, request: "X-B: 1\r\nX-C: 2\r\n", hit: true},
		{name: "backend request id", resp: cannedResponse{raw: "HTTP/1.1 200 OK\r\n" + maxAgeHour + "X-Request-Id: from-backend\r\nContent-Length: 2\r\n\r\nok"}, hit: true},
		{name: "connection option", resp: cannedResponse{raw: "HTTP/1.1 200 OK\r\n" + maxAgeHour + "Connection: X-Hop, keep-alive\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok"}, hit: true},
		{name: "control bytes in value", resp: cannedResponse{raw: "HTTP/1.1 200 OK\r\n" + maxAgeHour + "X-Ctl: a\x00b\x7f\tc\x01\r\nContent-Length: 2\r\n\r\nok"}},
		{name: "empty body", resp: cannedResponse{raw: "HTTP/1.1 200 OK\r\n" + maxAgeHour + "Content-Length: 0\r\n\r\n"}, hit: true},
		{name: "chunked", resp: cannedResponse{raw: "HTTP/1.1 200 OK\r\n" + maxAgeHour + "Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"}, hit: true},
		{name: "203 max-age", resp: cannedResponse{raw: "HTTP/1.1 203 Non-Authoritative Information\r\n" + maxAgeHour + "Content-Length: 2\r\n\r\nok"}, hit: true},
		{name: "204 max-age", resp: cannedResponse{raw: "HTTP/1.1 204 No Content\r\n" + maxAgeHour + "\r\n"}, hit: true},
		{name: "301 heuristic", resp: cannedResponse{raw: "HTTP/1.1 301 Moved Permanently\r\nLocation: /elsewhere\r\n" + lastModified + "Content-Length: 2\r\n\r\nok"}, hit: true},
		{name: "404 max-age", resp: cannedResponse{raw: "HTTP/1.1 404 Not Found\r\n" + maxAgeHour + "Content-Length: 2\r\n\r\nok"}, hit: true},
		{name: "410 heuristic", resp: cannedResponse{raw: "HTTP/1.1 410 Gone\r\n" + lastModified + "Content-Length: 2\r\n\r\nok"}, hit: true},
		{name: "501 max-age", resp: cannedResponse{raw: "HTTP/1.1 501 Not Implemented\r\n" + maxAgeHour + "Content-Length: 2\r\n\r\nok"}, hit: true},
		{name: "599 max-age", resp: cannedResponse{raw: "HTTP/1.1 599 Odd\r\n" + maxAgeHour + "Content-Length: 2\r\n\r\nok"}, hit: true},
	}
	responses := map[string]cannedResponse{}
	for i, tc := range tests {
		responses[fmt.Sprintf("/case%d", i)] = tc.resp
	}
	// A body that ends before its Content-Length is incomplete, and a
	// cache must not serve it (RFC 9111 section 3.3), so every request
	// reaches the backend.
	responses["/short"] = cannedResponse{raw: "HTTP/1.1 200 OK\r\n" + maxAgeHour + "Content-Length: 10\r\n\r\nshort", closeAfter: true}
	counts := map[string]*atomic.Int32{"/short": {}}
	s := startCachedL7(t, fmt.Sprintf(twoListeners, cannedBackend(t, responses, counts)))
	addrs := s.Addrs()

	t.Run("body shorter than content-length", func(t *testing.T) {
		for i, listener := range []string{"general", "fast", "fast"} {
			raw := rawExchange(t, addrs[listener].String(), "GET /short HTTP/1.1\r\nHost: app.test\r\n\r\n", 2*time.Second)
			if strings.Contains(raw, "hit") {
				t.Errorf("request %d on %s: served a truncated body from the cache: %q", i, listener, raw)
			}
			if n := counts["/short"].Load(); n != int32(i+1) {
				t.Errorf("after request %d, backend saw %d requests, want %d", i, n, i+1)
			}
		}
	})

	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := fmt.Sprintf("/case%d", i)
			exchange := func(listener, method string) wireResponse {
				t.Helper()
				req := method + " " + path + " HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n" + tc.request + "\r\n"
				raw := rawExchange(t, addrs[listener].String(), req, 2*time.Second)
				return parseWire(t, listener+" "+method, raw, method == "HEAD")
			}
			exchange("general", "GET") // stores the response when it can

			for _, method := range []string{"GET", "HEAD"} {
				before := fastCount(t, s)
				fast := exchange("fast", method)
				onFast := fastCount(t, s) == before+1
				general := exchange("general", method)

				if fast.isHit() != tc.hit || general.isHit() != tc.hit {
					t.Errorf("%s: hit on fast path %v, on net/http %v, want %v", method, fast.isHit(), general.isHit(), tc.hit)
				}
				if tc.hit && !onFast {
					t.Errorf("%s: hit not served on the fast path", method)
				}
				if fast.statusLine != general.statusLine {
					t.Errorf("%s: status line %q on the fast path, %q on net/http", method, fast.statusLine, general.statusLine)
				}
				if fast.body != general.body {
					t.Errorf("%s: body %q on the fast path, %q on net/http", method, fast.body, general.body)
				}
				if got, want := fast.sharedFields(), general.sharedFields(); tc.hit && !slices.Equal(got, want) {
					t.Errorf("%s: fields differ:\nfast:     %q\nnet/http: %q", method, got, want)
				}
				for _, r := range []wireResponse{fast, general} {
					if tc.hit && len(r.values("Set-Cookie")) > 0 {
						t.Errorf("%s: hit carries Set-Cookie %q", method, r.values("Set-Cookie"))
					}
					if ids := r.values("X-Request-Id"); len(ids) != 1 || ids[0] == "from-backend" {
						t.Errorf("%s: X-Request-Id %q, want one of the proxy's", method, ids)
					}
					if c := r.values("Connection"); !slices.Equal(c, []string{"close"}) {
						t.Errorf("%s: Connection %q, want close", method, c)
					}
				}
			}
		})
	}
}

// TestFastPathHeadOnlyEntry stores a response to HEAD and checks that it
// serves HEAD on both paths alike, that a GET never gets it, and that a
// HEAD after the GET gets the full entry.
func TestFastPathHeadOnlyEntry(t *testing.T) {
	head := "HTTP/1.1 200 OK\r\n" + maxAgeHour + "ETag: \"h\"\r\nContent-Length: 10\r\n"
	responses := map[string]cannedResponse{"/h": {raw: head + "\r\n0123456789"}}
	counts := map[string]*atomic.Int32{"/h": {}}
	s := startCachedL7(t, fmt.Sprintf(twoListeners, cannedBackend(t, responses, counts)))
	addrs := s.Addrs()
	exchange := func(listener, method string) wireResponse {
		t.Helper()
		raw := rawExchange(t, addrs[listener].String(), method+" /h HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n", 2*time.Second)
		return parseWire(t, listener+" "+method, raw, method == "HEAD")
	}

	exchange("general", "HEAD")
	fast, general := exchange("fast", "HEAD"), exchange("general", "HEAD")
	if !fast.isHit() || !general.isHit() {
		t.Fatalf("HEAD after HEAD: hit on fast path %v, on net/http %v", fast.isHit(), general.isHit())
	}
	if got, want := fast.sharedFields(), general.sharedFields(); !slices.Equal(got, want) {
		t.Errorf("HEAD fields differ:\nfast:     %q\nnet/http: %q", got, want)
	}
	if cl := fast.values("Content-Length"); !slices.Equal(cl, []string{"10"}) {
		t.Errorf("HEAD hit Content-Length %q, want the stored 10", cl)
	}
	if n := counts["/h"].Load(); n != 1 {
		t.Errorf("backend saw %d requests after three HEADs, want 1", n)
	}

	get := exchange("fast", "GET")
	if get.isHit() || get.body != "0123456789" {
		t.Errorf("GET after a HEAD-only entry: hit %v, body %q; want a miss with the full body", get.isHit(), get.body)
	}
	if n := counts["/h"].Load(); n != 2 {
		t.Errorf("backend saw %d requests after the GET, want 2", n)
	}
	afterGet := exchange("fast", "HEAD")
	if !afterGet.isHit() || afterGet.body != "" || !slices.Equal(afterGet.values("Content-Length"), []string{"10"}) {
		t.Errorf("HEAD after GET: hit %v, body %q, Content-Length %q", afterGet.isHit(), afterGet.body, afterGet.values("Content-Length"))
	}
}

// TestFastPathHitAfterRevalidation freshens an entry with a 304 that
// changes and adds fields, and checks that fast hits send the new fields
// (RFC 9111 section 4.3.4). Requests that forbid a stored response
// without validation never get a fast hit.
func TestFastPathHitAfterRevalidation(t *testing.T) {
	var conditional atomic.Int32
	addr := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		for {
			tp := textproto.NewReader(r)
			if _, err := tp.ReadLine(); err != nil {
				return
			}
			h, err := tp.ReadMIMEHeader()
			if err != nil {
				return
			}
			resp := "HTTP/1.1 200 OK\r\n" + maxAgeHour + "ETag: \"v1\"\r\nX-Old: 1\r\nX-Gone: 1\r\nContent-Length: 2\r\n\r\nok"
			if h.Get("If-None-Match") != "" {
				conditional.Add(1)
				resp = "HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nCache-Control: max-age=7200\r\nX-Old: 2\r\nX-New: 3\r\nSet-Cookie: s=1\r\n\r\n"
			}
			if _, err := io.WriteString(c, resp); err != nil {
				return
			}
		}
	})
	s := startCachedL7(t, fmt.Sprintf(twoListeners, addr))
	addrs := s.Addrs()
	exchange := func(listener, extra string) wireResponse {
		t.Helper()
		raw := rawExchange(t, addrs[listener].String(), "GET /r HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n"+extra+"\r\n", 2*time.Second)
		return parseWire(t, listener+" "+extra, raw, false)
	}

	exchange("general", "")
	if before := exchange("fast", ""); !slices.Equal(before.values("X-Old"), []string{"1"}) {
		t.Fatalf("hit before revalidation: X-Old %q, want 1", before.values("X-Old"))
	}
	for i, extra := range []string{"Cache-Control: no-cache\r\n", "Pragma: no-cache\r\n", "Cache-Control: max-age=0\r\n"} {
		before := fastCount(t, s)
		r := exchange("fast", extra)
		if r.isHit() || fastCount(t, s) != before {
			t.Errorf("%q: served from the cache without validation", extra)
		}
		if n := conditional.Load(); n != int32(i+1) {
			t.Errorf("%q: backend saw %d conditional requests, want %d", extra, n, i+1)
		}
		if len(r.values("Set-Cookie")) != 1 {
			t.Errorf("%q: the revalidating client got Set-Cookie %q, want the 304's", extra, r.values("Set-Cookie"))
		}
	}

	before := fastCount(t, s)
	fast, general := exchange("fast", ""), exchange("general", "")
	if !fast.isHit() || fastCount(t, s) != before+1 {
		t.Fatalf("hit after revalidation not served on the fast path: %q", fast.fields)
	}
	for name, want := range map[string][]string{"X-Old": {"2"}, "X-New": {"3"}, "X-Gone": {"1"}, "Cache-Control": {"max-age=7200"}, "Set-Cookie": nil} {
		if got := fast.values(name); !slices.Equal(got, want) {
			t.Errorf("fast hit after revalidation: %s %q, want %q", name, got, want)
		}
	}
	if got, want := fast.sharedFields(), general.sharedFields(); !slices.Equal(got, want) {
		t.Errorf("fields differ after revalidation:\nfast:     %q\nnet/http: %q", got, want)
	}
}

// TestFastPathHitAfterPurge purges and invalidates an entry between fast
// hits and checks that the next request reaches the backend and stores
// the new response.
func TestFastPathHitAfterPurge(t *testing.T) {
	var version atomic.Int32
	addr := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		for readRequestHead(r) != "" {
			body := fmt.Sprintf("v%d", version.Add(1))
			resp := "HTTP/1.1 200 OK\r\n" + maxAgeHour + "Content-Length: " + fmt.Sprint(len(body)) + "\r\n\r\n" + body
			if _, err := io.WriteString(c, resp); err != nil {
				return
			}
		}
	})
	s, c := startCachedL7WithCache(t, fmt.Sprintf(twoListeners, addr))
	addrs := s.Addrs()
	get := func(method string) wireResponse {
		t.Helper()
		raw := rawExchange(t, addrs["fast"].String(), method+" /p HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 2*time.Second)
		return parseWire(t, method, raw, method == "HEAD")
	}

	if r := get("GET"); r.isHit() || r.body != "v1" {
		t.Fatalf("first GET: hit %v, body %q", r.isHit(), r.body)
	}
	if r := get("GET"); !r.isHit() || r.body != "v1" {
		t.Fatalf("second GET: hit %v, body %q; want a hit with v1", r.isHit(), r.body)
	}

	rec := httptest.NewRecorder()
	c.PurgeHandler().ServeHTTP(rec, httptest.NewRequest("POST", "/cache/purge?url=http://app.test/p", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"purged":1`) {
		t.Fatalf("purge: %d %s", rec.Code, rec.Body)
	}
	if r := get("GET"); r.isHit() || r.body != "v2" {
		t.Errorf("GET after purge: hit %v, body %q; want a miss with v2", r.isHit(), r.body)
	}
	if r := get("GET"); !r.isHit() || r.body != "v2" {
		t.Errorf("GET after purge and store: hit %v, body %q; want a hit with v2", r.isHit(), r.body)
	}

	// A successful unsafe request invalidates the URI (RFC 9111 section 4.4).
	if r := get("POST"); r.isHit() || r.body != "v3" {
		t.Errorf("POST: hit %v, body %q", r.isHit(), r.body)
	}
	if r := get("GET"); r.isHit() || r.body != "v4" {
		t.Errorf("GET after POST: hit %v, body %q; want a miss with v4", r.isHit(), r.body)
	}
}

// TestFastPathStoredHitsConcurrent sends fast hits on many connections
// while another goroutine replaces, freshens and purges the entry, and
// checks that every response is whole and consistent: its body, ETag and
// X-Version name the same version. Run it with -race.
func TestFastPathStoredHitsConcurrent(t *testing.T) {
	var mu sync.Mutex
	version, freshened := 1, 0
	addr := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		for {
			tp := textproto.NewReader(r)
			if _, err := tp.ReadLine(); err != nil {
				return
			}
			h, err := tp.ReadMIMEHeader()
			if err != nil {
				return
			}
			mu.Lock()
			v := version
			tag := fmt.Sprintf(`"%d"`, v)
			var resp string
			if h.Get("If-None-Match") == tag {
				freshened++
				resp = fmt.Sprintf("HTTP/1.1 304 Not Modified\r\nETag: %s\r\n"+maxAgeHour+"X-Freshened: %d\r\n\r\n", tag, freshened)
			} else {
				body := fmt.Sprintf("body-%d", v)
				resp = fmt.Sprintf("HTTP/1.1 200 OK\r\n"+maxAgeHour+"ETag: %s\r\nX-Version: %d\r\nContent-Length: %d\r\n\r\n%s", tag, v, len(body), body)
			}
			mu.Unlock()
			if _, err := io.WriteString(c, resp); err != nil {
				return
			}
		}
	})
	s, cc := startCachedL7WithCache(t, fmt.Sprintf(twoListeners, addr))
	addrs := s.Addrs()

	const conns, perConn, maxChanges = 24, 10, 300
	check := func(resp *http.Response, body string) error {
		v := resp.Header.Get("X-Version")
		if body != "body-"+v || resp.Header.Get("ETag") != `"`+v+`"` {
			return fmt.Errorf("body %q, ETag %q, X-Version %q", body, resp.Header.Get("ETag"), v)
		}
		if cl := resp.Header.Values("Content-Length"); len(cl) != 1 || cl[0] != fmt.Sprint(len(body)) {
			return fmt.Errorf("Content-Length %q with body %q", cl, body)
		}
		return nil
	}
	get := func(listener, extra string) error {
		raw := rawExchange(t, addrs[listener].String(), "GET /c HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n"+extra+"\r\n", 2*time.Second)
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(raw)), nil)
		if err != nil {
			return fmt.Errorf("read %q: %w", raw, err)
		}
		body, _ := io.ReadAll(resp.Body)
		return check(resp, string(body))
	}
	if err := get("general", ""); err != nil {
		t.Fatal(err)
	}

	var wg, clients sync.WaitGroup
	errs := make(chan error, conns*perConn+maxChanges)
	clientsDone := make(chan struct{})
	var seenFreshened atomic.Int32
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Change the entry until the clients are done, at most maxChanges
		// times.
		for i := range maxChanges {
			select {
			case <-clientsDone:
				return
			default:
			}
			var err error
			switch i % 3 {
			case 0: // replace: a new version, stored by a no-cache request
				mu.Lock()
				version++
				mu.Unlock()
				err = get("general", "Cache-Control: no-cache\r\n")
			case 1: // freshen: a 304 for the stored version
				err = get("general", "Cache-Control: no-cache\r\n")
			case 2:
				rec := httptest.NewRecorder()
				cc.PurgeHandler().ServeHTTP(rec, httptest.NewRequest("POST", "/cache/purge?url=http://app.test/c", nil))
				if rec.Code != http.StatusOK {
					err = fmt.Errorf("purge: %d %s", rec.Code, rec.Body)
				}
			}
			if err != nil {
				errs <- fmt.Errorf("change %d: %w", i, err)
			}
		}
	}()
	for range conns {
		clients.Add(1)
		go func() {
			defer clients.Done()
			c, err := net.Dial("tcp", addrs["fast"].String())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			br := bufio.NewReader(c)
			for i := range perConn {
				if _, err := io.WriteString(c, "GET /c HTTP/1.1\r\nHost: app.test\r\n\r\n"); err != nil {
					errs <- fmt.Errorf("request %d: %w", i, err)
					return
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					errs <- fmt.Errorf("response %d: %w", i, err)
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil {
					err = check(resp, string(body))
				}
				if resp.Header.Get("X-Freshened") != "" {
					seenFreshened.Add(1)
				}
				if err != nil {
					errs <- fmt.Errorf("response %d: %w", i, err)
					return
				}
			}
		}()
	}
	clients.Wait()
	close(clientsDone)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := fastCount(t, s); n == 0 {
		t.Error("no request was served on the fast path")
	}
	t.Logf("%.0f fast responses, %d from a freshened entry", fastCount(t, s), seenFreshened.Load())
}

// TestFastExchangeReleasesStoredEntry checks that an exchange back in its
// pool keeps no part of the stored response it wrote alive. That covers
// the body and wire head on the stored path, and the field values on the
// header-map path, which a draining connection takes when the stored head
// has a Connection field.
func TestFastExchangeReleasesStoredEntry(t *testing.T) {
	for _, tc := range []struct {
		name     string
		draining bool
	}{
		{name: "stored path"},
		{name: "header-map path", draining: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := make([]byte, 256<<10)
			values := []string{`"a"`}
			fields := []passthrough.Field{{Name: "Connection", Values: []string{"x-hop"}}, {Name: "Etag", Values: values}}
			wire := []byte("Connection: x-hop\r\nEtag: \"a\"\r\n")
			weakBody, weakValues, weakFields, weakWire := weak.Make(&body[0]), weak.Make(&values[0]), weak.Make(&fields[0]), weak.Make(&wire[0])

			x := &fastExchange{req: h1Request{method: "GET"}}
			x.w.header = http.Header{"X-Request-Id": {"id"}}
			x.w.WriteStored(passthrough.Stored{Status: http.StatusOK, Fields: fields, Wire: wire, Body: body})
			var out strings.Builder
			bw := bufio.NewWriter(&out)
			if keep := x.writeResponded(bw, tc.draining); keep == tc.draining {
				t.Errorf("writeResponded(draining %v) = %v", tc.draining, keep)
			}
			bw.Flush()
			if !strings.HasSuffix(out.String(), "\r\n\r\n"+string(body)) {
				t.Fatalf("response does not end with the body: %q", out.String()[:200])
			}
			x.release()

			body, values, fields, wire = nil, nil, nil, nil
			runtime.GC()
			runtime.GC()
			for name, released := range map[string]bool{
				"body":         weakBody.Value() == nil,
				"field values": weakValues.Value() == nil,
				"fields":       weakFields.Value() == nil,
				"wire head":    weakWire.Value() == nil,
			} {
				if !released {
					t.Errorf("released exchange keeps the stored %s alive", name)
				}
			}
			runtime.KeepAlive(x)
		})
	}
}

// TestWriteStoredDraining writes a stored hit on a draining connection
// and checks that it carries one Connection: close, whatever Connection
// the responder set, and ends the connection.
func TestWriteStoredDraining(t *testing.T) {
	x := &fastExchange{req: h1Request{method: "GET"}}
	x.w.header = http.Header{"X-Request-Id": {"id"}, "Connection": {"keep-alive"}}
	x.w.WriteStored(passthrough.Stored{
		Status: http.StatusOK,
		Fields: []passthrough.Field{{Name: "Etag", Values: []string{`"a"`}}},
		Wire:   []byte("Etag: \"a\"\r\n"),
		Extra:  []passthrough.Field{{Name: "Content-Length", Values: []string{"2"}}},
		Body:   []byte("ok"),
	})
	var out strings.Builder
	bw := bufio.NewWriter(&out)
	if x.writeResponded(bw, true) {
		t.Error("writeResponded(draining) kept the connection")
	}
	bw.Flush()
	r := parseWire(t, "draining", out.String(), false)
	if c := r.values("Connection"); !slices.Equal(c, []string{"close"}) {
		t.Errorf("Connection %q, want close", c)
	}
	if r.body != "ok" || !slices.Equal(r.values("Etag"), []string{`"a"`}) {
		t.Errorf("got %q", out.String())
	}
}

// TestFastPathPipelinedHits sends hits, a HEAD hit, a conditional hit
// and a miss in one write on one connection and checks that each response
// is whole and in order, also after the miss moved the connection to
// net/http.
func TestFastPathPipelinedHits(t *testing.T) {
	responses := map[string]cannedResponse{}
	for _, p := range []string{"/a", "/b", "/miss"} {
		body := "body of " + p
		responses[p] = cannedResponse{raw: fmt.Sprintf("HTTP/1.1 200 OK\r\n"+maxAgeHour+"ETag: \"%s\"\r\nContent-Length: %d\r\n\r\n%s", p, len(body), body)}
	}
	s := startCachedL7(t, fmt.Sprintf(twoListeners, cannedBackend(t, responses, nil)))
	addrs := s.Addrs()
	for _, p := range []string{"/a", "/b"} {
		rawExchange(t, addrs["general"].String(), "GET "+p+" HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n", 2*time.Second)
	}

	requests := []struct {
		method, path, extra string
		status              int
		body                string
		hit                 bool
	}{
		{"GET", "/a", "", 200, "body of /a", true},
		{"HEAD", "/b", "", 200, "", true},
		{"GET", "/b", "If-None-Match: \"/b\"\r\n", 304, "", true},
		{"GET", "/b", "", 200, "body of /b", true},
		{"GET", "/miss", "", 200, "body of /miss", false},
		{"GET", "/a", "", 200, "body of /a", true},
	}
	var all strings.Builder
	for _, r := range requests {
		fmt.Fprintf(&all, "%s %s HTTP/1.1\r\nHost: app.test\r\n%s\r\n", r.method, r.path, r.extra)
	}
	c, err := net.Dial("tcp", addrs["fast"].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, all.String()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for i, want := range requests {
		resp, err := http.ReadResponse(br, &http.Request{Method: want.method})
		if err != nil {
			t.Fatalf("response %d (%s %s): %v", i, want.method, want.path, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("response %d: read body: %v", i, err)
		}
		if resp.StatusCode != want.status || string(body) != want.body {
			t.Errorf("response %d (%s %s): %d %q, want %d %q", i, want.method, want.path, resp.StatusCode, body, want.status, want.body)
		}
		cs := resp.Header.Values("Cache-Status")
		if hit := len(cs) > 0 && strings.HasPrefix(cs[len(cs)-1], "tidegate; hit"); hit != want.hit {
			t.Errorf("response %d (%s %s): Cache-Status %q, want hit %v", i, want.method, want.path, cs, want.hit)
		}
	}
}

// TestFastPathDrainDuringHits drains the server while keep-alive clients
// send fast hits without pause. Every response a client gets must be
// whole. A connection ends only between responses: after one with
// Connection: close, or by a close while it was idle.
func TestFastPathDrainDuringHits(t *testing.T) {
	responses := map[string]cannedResponse{"/d": {raw: "HTTP/1.1 200 OK\r\n" + maxAgeHour + "Content-Length: 4\r\n\r\nbody"}}
	s := startCachedL7(t, fmt.Sprintf(twoListeners, cannedBackend(t, responses, nil)))
	addrs := s.Addrs()
	rawExchange(t, addrs["general"].String(), "GET /d HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n", 2*time.Second)

	const clients, maxRequests = 8, 200
	var wg sync.WaitGroup
	var hits, closing atomic.Int32
	started := make(chan struct{}, clients)
	errs := make(chan error, clients)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addrs["fast"].String())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			br := bufio.NewReader(c)
			for i := range maxRequests {
				if i == 1 {
					started <- struct{}{}
				}
				if _, err := io.WriteString(c, "GET /d HTTP/1.1\r\nHost: app.test\r\n\r\n"); err != nil {
					return // closed while idle
				}
				if _, err := br.Peek(1); err != nil {
					return // closed while idle, before reading the request
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					errs <- fmt.Errorf("request %d: partial response head: %w", i, err)
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(body) != "body" {
					errs <- fmt.Errorf("request %d: body %q, %v", i, body, err)
					return
				}
				hits.Add(1)
				if resp.Close {
					closing.Add(1)
					if _, err := br.ReadByte(); err == nil {
						errs <- fmt.Errorf("request %d: bytes after a response with Connection: close", i)
					}
					return
				}
			}
		}()
	}
	for range clients {
		<-started
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Drain(ctx); err != nil {
		t.Errorf("drain: %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d hits before the connections closed, %d of them with Connection: close", hits.Load(), closing.Load())
}
