//go:build integration

package integration

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// cacheAdminToken is the admin bearer token of every L7 started by
// startCacheL7.
const cacheAdminToken = "cache-test-token"

// cacheHost is the Host of requests unless a test sets another. Requests go
// to the listener's address, so nothing resolves the name.
const cacheHost = "www.example.test"

// cacheBackend is an HTTP backend on 127.0.0.1 that counts the requests it
// receives per path and whose handler a test can replace at any time.
type cacheBackend struct {
	srv *httptest.Server

	mu      sync.Mutex
	handler http.HandlerFunc
	counts  map[string]int
	last    map[string]http.Header // header fields of the last request per path
}

func startCacheBackend(t *testing.T, h http.HandlerFunc) *cacheBackend {
	t.Helper()
	b := &cacheBackend{handler: h, counts: map[string]int{}, last: map[string]http.Header{}}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.counts[r.URL.Path]++
		b.last[r.URL.Path] = r.Header.Clone()
		h := b.handler
		b.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *cacheBackend) addr() string { return b.srv.Listener.Addr().String() }

// setHandler replaces the handler for the requests that arrive from now on.
func (b *cacheBackend) setHandler(h http.HandlerFunc) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.handler = h
}

// count returns how many requests for path the backend received.
func (b *cacheBackend) count(path string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.counts[path]
}

// lastHeader returns the header fields of the last request for path.
func (b *cacheBackend) lastHeader(path string) http.Header {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last[path]
}

// cacheL7 is a running L7 whose listener "edge" takes PROXY headers from
// 127.0.0.1, with caching routes in front of one backend.
type cacheL7 struct {
	*l7Proc
	addr           string
	backend        string
	extraListeners string
}

// cacheConfig renders the configuration of a cacheL7. The first matching
// route wins. /nocache/ does not cache, /cookies-stored/ stores responses
// that set cookies (without Set-Cookie), and every other path caches with
// the defaults. extraListeners is YAML for more listeners, indented as list
// items under "listeners:", or empty.
func cacheConfig(admin, listen, backend, maxSize, extraListeners string) string {
	return fmt.Sprintf(`admin:
  address: %s
  token: %s
drain_timeout: 10s
l7:
  cache:
    max_size: %s
  listeners:
    - name: edge
      address: %s
      proxy_protocol:
        trusted: ["127.0.0.1/32"]
%s
  routes:
    - name: nocache
      match: {path_prefix: /nocache/}
      upstream: app
    - name: cookies
      match: {path_prefix: /cookies-stored/}
      upstream: app
      cache: {enabled: true, store_set_cookie: true}
    - name: cached
      upstream: app
      cache: {enabled: true}
  upstreams:
    - name: app
      backends:
        - address: %s
`, admin, cacheAdminToken, maxSize, listen, extraListeners, backend)
}

// startCacheL7 runs an L7 with the configuration of [cacheConfig] and waits
// until it is ready.
func startCacheL7(t *testing.T, backend, extraListeners string) *cacheL7 {
	t.Helper()
	dir := t.TempDir()
	admin, listen := freeAddr(t), freeAddr(t)
	path := writeFile(t, dir, "l7.yaml", cacheConfig(admin, listen, backend, "32MiB", extraListeners))
	p := startTidegate(t, "l7", "l7", "--config", path)
	waitReady(t, admin)
	return &cacheL7{l7Proc: &l7Proc{proc: p, admin: admin, config: path}, addr: listen, backend: backend, extraListeners: extraListeners}
}

// cacheResponse is what a client received, with the body read.
type cacheResponse struct {
	status int
	header http.Header
	body   string
}

// cacheStatus returns the Cache-Status field.
func (r cacheResponse) cacheStatus() string { return r.header.Get("Cache-Status") }

// hit reports whether Cache-Status marks the response as a cache hit.
func (r cacheResponse) hit() bool { return strings.Contains(r.cacheStatus(), "; hit") }

// age returns the Age field in seconds, or -1 when it is missing or invalid.
func (r cacheResponse) age() int {
	n, err := strconv.Atoi(r.header.Get("Age"))
	if err != nil {
		return -1
	}
	return n
}

// get sends a GET for path with Host host and the given header fields
// through c to the L7.
func (l *cacheL7) get(t *testing.T, c *http.Client, host, path string, header http.Header) cacheResponse {
	t.Helper()
	req := newRequest(t, http.MethodGet, "http://"+l.addr+path, nil)
	req.Host = host
	for name, values := range header {
		req.Header[name] = values
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s%s: %v", host, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body of %s%s: %v", host, path, err)
	}
	return cacheResponse{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

// purge sends method to the admin purge endpoint with the form values and
// bearer token (none when empty), and returns the status and body.
func (l *cacheL7) purge(t *testing.T, method string, form url.Values, token string) (int, string) {
	t.Helper()
	req := newRequest(t, method, "http://"+l.admin+"/cache/purge?"+form.Encode(), nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s /cache/purge: %v", method, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestL7CacheHitAgeGrows stores a response and serves it again from the
// cache with an Age that grows while the backend receives one request.
func TestL7CacheHitAgeGrows(t *testing.T) {
	backend := startCacheBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "hello")
	})
	l := startCacheL7(t, backend.addr(), "")
	c := l4Client(t, "198.51.100.20:40000", nil, "")

	first := l.get(t, c, cacheHost, "/age", nil)
	if first.status != http.StatusOK || first.body != "hello" {
		t.Fatalf("first GET = %d %q, want 200 \"hello\"", first.status, first.body)
	}
	if first.hit() {
		t.Errorf("first GET Cache-Status = %q, want a miss", first.cacheStatus())
	}

	second := l.get(t, c, cacheHost, "/age", nil)
	if !second.hit() {
		t.Fatalf("second GET Cache-Status = %q, want a hit", second.cacheStatus())
	}
	if second.body != "hello" {
		t.Errorf("second GET body = %q, want \"hello\"", second.body)
	}
	startAge := second.age()
	if startAge < 0 {
		t.Fatalf("hit has Age %q, want a number of seconds", second.header.Get("Age"))
	}

	// Age counts whole seconds, so it grows within about a second.
	var later cacheResponse
	eventually(t, 5*time.Second, "Age above "+strconv.Itoa(startAge), func() bool {
		later = l.get(t, c, cacheHost, "/age", nil)
		return later.age() > startAge
	})
	if !later.hit() {
		t.Errorf("later GET Cache-Status = %q, want a hit", later.cacheStatus())
	}
	if later.body != "hello" {
		t.Errorf("later GET body = %q, want \"hello\"", later.body)
	}
	if n := backend.count("/age"); n != 1 {
		t.Errorf("backend received %d requests for /age, want 1", n)
	}
}

// TestL7CacheRevalidation304 serves a stale entry after the backend responds
// to its conditional request with 304, and takes the 304's header fields.
func TestL7CacheRevalidation304(t *testing.T) {
	backend := startCacheBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.Header().Set("Cache-Control", "max-age=60")
			w.Header().Set("X-Version", "2")
			w.WriteHeader(http.StatusNotModified)
			return
		}
		// max-age=0 makes the stored entry stale at once, so the next
		// request revalidates without waiting.
		w.Header().Set("Cache-Control", "max-age=0")
		w.Header().Set("X-Version", "1")
		fmt.Fprint(w, "payload")
	})
	l := startCacheL7(t, backend.addr(), "")
	c := l4Client(t, "198.51.100.21:40000", nil, "")

	first := l.get(t, c, cacheHost, "/doc", nil)
	if first.status != http.StatusOK || first.header.Get("X-Version") != "1" {
		t.Fatalf("first GET = %d X-Version %q, want 200 and 1", first.status, first.header.Get("X-Version"))
	}
	if !strings.Contains(first.cacheStatus(), "stored") {
		t.Fatalf("first GET Cache-Status = %q, want stored", first.cacheStatus())
	}

	second := l.get(t, c, cacheHost, "/doc", nil)
	if got := backend.lastHeader("/doc").Get("If-None-Match"); got != `"v1"` {
		t.Errorf("revalidation sent If-None-Match %q, want \"v1\"", got)
	}
	if second.status != http.StatusOK {
		t.Errorf("second GET status = %d, want 200 (the stored response)", second.status)
	}
	if second.body != "payload" {
		t.Errorf("second GET body = %q, want the stored \"payload\"", second.body)
	}
	if got := second.header.Get("X-Version"); got != "2" {
		t.Errorf("second GET X-Version = %q, want 2 from the 304", got)
	}
	if !strings.Contains(second.cacheStatus(), "fwd-status=304") {
		t.Errorf("second GET Cache-Status = %q, want fwd-status=304", second.cacheStatus())
	}

	// The 304 made the entry fresh for 60s, so this one is a plain hit.
	third := l.get(t, c, cacheHost, "/doc", nil)
	if !third.hit() {
		t.Errorf("third GET Cache-Status = %q, want a hit", third.cacheStatus())
	}
	if got := third.header.Get("X-Version"); got != "2" {
		t.Errorf("third GET X-Version = %q, want 2 kept from the 304", got)
	}
	if third.body != "payload" {
		t.Errorf("third GET body = %q, want \"payload\"", third.body)
	}
	if n := backend.count("/doc"); n != 2 {
		t.Errorf("backend received %d requests for /doc, want 2 (store, revalidate)", n)
	}
}

// TestL7CacheStaleIfError serves the stored response while the backend
// returns 503, and the backend's own responses again once it recovers.
func TestL7CacheStaleIfError(t *testing.T) {
	backend := startCacheBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=0, stale-if-error=60")
		fmt.Fprint(w, "good")
	})
	l := startCacheL7(t, backend.addr(), "")
	c := l4Client(t, "198.51.100.22:40000", nil, "")

	first := l.get(t, c, cacheHost, "/fragile", nil)
	if first.status != http.StatusOK || first.body != "good" {
		t.Fatalf("first GET = %d %q, want 200 \"good\"", first.status, first.body)
	}

	backend.setHandler(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	})
	during := l.get(t, c, cacheHost, "/fragile", nil)
	if during.status != http.StatusOK {
		t.Errorf("GET during 503 status = %d, want 200 from the stale entry", during.status)
	}
	if during.body != "good" {
		t.Errorf("GET during 503 body = %q, want the stale \"good\"", during.body)
	}
	if !strings.Contains(during.cacheStatus(), "fwd-status=503") {
		t.Errorf("GET during 503 Cache-Status = %q, want fwd-status=503", during.cacheStatus())
	}
	if n := backend.count("/fragile"); n < 2 {
		t.Errorf("backend received %d requests for /fragile, want at least 2 (the stale entry must be tried upstream)", n)
	}

	backend.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=0, stale-if-error=60")
		fmt.Fprint(w, "recovered")
	})
	after := l.get(t, c, cacheHost, "/fragile", nil)
	if after.status != http.StatusOK || after.body != "recovered" {
		t.Errorf("GET after recovery = %d %q, want 200 \"recovered\"", after.status, after.body)
	}
}

// TestL7CacheCoalescesColdKey sends 50 concurrent requests for a key that is
// not stored and checks that the backend receives exactly one.
func TestL7CacheCoalescesColdKey(t *testing.T) {
	const clients = 50
	release := make(chan struct{})
	backend := startCacheBackend(t, func(w http.ResponseWriter, r *http.Request) {
		// Hold the first response until every client is waiting. The
		// timeout only keeps a broken run from hanging.
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "cold")
	})
	l := startCacheL7(t, backend.addr(), "")
	c := l4Client(t, "198.51.100.23:40000", nil, "")

	results := make(chan cacheResponse, clients)
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := newRequest(t, http.MethodGet, "http://"+l.addr+"/cold", nil)
			req.Host = cacheHost
			resp, err := c.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				errs <- err
				return
			}
			results <- cacheResponse{status: resp.StatusCode, header: resp.Header, body: string(body)}
		}()
	}

	// Every client has its own connection, so 50 open connections and a
	// request held at the backend mean that the others are in the proxy.
	// The short pause lets their request headers be read.
	eventually(t, 10*time.Second, "50 client connections and one backend request", func() bool {
		conns, _ := metricValue(t, l.admin, `tidegate_l7_connections_active{listener="edge"}`)
		return conns >= clients && backend.count("/cold") >= 1
	})
	time.Sleep(300 * time.Millisecond)
	close(release)
	wg.Wait()
	close(results)
	close(errs)

	for err := range errs {
		t.Errorf("client request failed: %v", err)
	}
	n := 0
	for r := range results {
		n++
		if r.status != http.StatusOK || r.body != "cold" {
			t.Errorf("client got %d %q, want 200 \"cold\"", r.status, r.body)
		}
	}
	if n != clients {
		t.Errorf("%d clients got a response, want %d", n, clients)
	}
	if got := backend.count("/cold"); got != 1 {
		t.Errorf("backend received %d requests for /cold, want 1", got)
	}
	coalesced, _ := metricValue(t, l.admin, `tidegate_l7_cache_coalesced_total{route="cached"}`)
	if coalesced < 1 {
		t.Errorf("tidegate_l7_cache_coalesced_total = %v, want at least 1 request that waited", coalesced)
	}
	t.Logf("%v of %d requests waited for the first one", coalesced, clients)
}

// TestL7CacheAuthorizationNotShared checks that a response to a request with
// Authorization, without public or s-maxage, is not served to a client that
// sends none.
func TestL7CacheAuthorizationNotShared(t *testing.T) {
	backend := startCacheBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		if auth := r.Header.Get("Authorization"); auth != "" {
			fmt.Fprint(w, "account of "+auth)
			return
		}
		fmt.Fprint(w, "anonymous")
	})
	l := startCacheL7(t, backend.addr(), "")
	alice := l4Client(t, "198.51.100.24:40000", nil, "")
	other := l4Client(t, "198.51.100.25:40000", nil, "")

	withAuth := l.get(t, alice, cacheHost, "/account", http.Header{"Authorization": {"Bearer alice"}})
	if withAuth.body != "account of Bearer alice" {
		t.Fatalf("GET with Authorization body = %q, want \"account of Bearer alice\"", withAuth.body)
	}
	if strings.Contains(withAuth.cacheStatus(), "stored") {
		t.Errorf("GET with Authorization Cache-Status = %q, want not stored", withAuth.cacheStatus())
	}

	anonymous := l.get(t, other, cacheHost, "/account", nil)
	if anonymous.body != "anonymous" {
		t.Errorf("GET without Authorization body = %q, want \"anonymous\"", anonymous.body)
	}
	if anonymous.hit() {
		t.Errorf("GET without Authorization Cache-Status = %q, want a miss", anonymous.cacheStatus())
	}
	if n := backend.count("/account"); n != 2 {
		t.Errorf("backend received %d requests for /account, want 2", n)
	}

	// The anonymous response was stored, which shows the route caches and
	// the first response was left out only for its Authorization.
	again := l.get(t, other, cacheHost, "/account", nil)
	if !again.hit() {
		t.Errorf("repeat GET without Authorization Cache-Status = %q, want a hit", again.cacheStatus())
	}
	if again.body != "anonymous" {
		t.Errorf("repeat GET without Authorization body = %q, want \"anonymous\"", again.body)
	}
}

// TestL7CacheSetCookieNotShared checks that a cookie set for one client is
// not sent to another. A default route does not store the response, and a
// route with store_set_cookie stores a copy without Set-Cookie.
func TestL7CacheSetCookieNotShared(t *testing.T) {
	var mu sync.Mutex
	session := 0
	backend := startCacheBackend(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		session++
		id := session
		mu.Unlock()
		w.Header().Set("Cache-Control", "max-age=60")
		http.SetCookie(w, &http.Cookie{Name: "session", Value: "secret-" + strconv.Itoa(id)})
		fmt.Fprint(w, "page")
	})
	l := startCacheL7(t, backend.addr(), "")
	first := l4Client(t, "198.51.100.26:40000", nil, "")
	second := l4Client(t, "198.51.100.27:40000", nil, "")

	for _, path := range []string{"/cookies/page", "/cookies-stored/page"} {
		t.Run(path, func(t *testing.T) {
			a := l.get(t, first, cacheHost, path, nil)
			cookieA := a.header.Get("Set-Cookie")
			if !strings.HasPrefix(cookieA, "session=secret-") {
				t.Fatalf("first client Set-Cookie = %q, want its own session cookie", cookieA)
			}

			b := l.get(t, second, cacheHost, path, nil)
			if b.body != "page" {
				t.Errorf("second client body = %q, want \"page\"", b.body)
			}
			for _, cookie := range b.header.Values("Set-Cookie") {
				if cookie == cookieA {
					t.Errorf("second client received the first client's cookie %q", cookie)
				}
			}
		})
	}

	// The default route must not store the response at all, while the
	// route with store_set_cookie serves its stored copy without the cookie.
	if n := backend.count("/cookies/page"); n != 2 {
		t.Errorf("backend received %d requests for /cookies/page, want 2 (not stored)", n)
	}
	if n := backend.count("/cookies-stored/page"); n != 1 {
		t.Errorf("backend received %d requests for /cookies-stored/page, want 1 (stored)", n)
	}
	stored := l.get(t, second, cacheHost, "/cookies-stored/page", nil)
	if !stored.hit() {
		t.Errorf("repeat GET on the storing route Cache-Status = %q, want a hit", stored.cacheStatus())
	}
	if got := stored.header.Values("Set-Cookie"); len(got) != 0 {
		t.Errorf("hit on the storing route carries Set-Cookie %q, want none", got)
	}
}

// TestL7CacheHostsSeparate checks that two hosts with the same path get
// their own entries.
func TestL7CacheHostsSeparate(t *testing.T) {
	backend := startCacheBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		host := r.Header.Get("X-Forwarded-Host")
		if host == "" {
			host = r.Host
		}
		fmt.Fprint(w, "site "+host)
	})
	l := startCacheL7(t, backend.addr(), "")
	c := l4Client(t, "198.51.100.28:40000", nil, "")

	hosts := []string{"a.example.test", "b.example.test"}
	for round := range 2 {
		for _, host := range hosts {
			r := l.get(t, c, host, "/same", nil)
			if want := "site " + host; r.body != want {
				t.Errorf("round %d: GET %s/same body = %q, want %q", round, host, r.body, want)
			}
			if wantHit := round == 1; r.hit() != wantHit {
				t.Errorf("round %d: GET %s/same Cache-Status = %q, want hit %v", round, host, r.cacheStatus(), wantHit)
			}
		}
	}
	if n := backend.count("/same"); n != 2 {
		t.Errorf("backend received %d requests for /same, want 2 (one per host)", n)
	}
}

// TestL7CachePurge removes stored entries through the admin endpoint, which
// requires the admin token.
func TestL7CachePurge(t *testing.T) {
	backend := startCacheBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "content")
	})
	l := startCacheL7(t, backend.addr(), "")
	c := l4Client(t, "198.51.100.29:40000", nil, "")

	for _, path := range []string{"/p/one", "/p/two"} {
		l.get(t, c, cacheHost, path, nil)
		if r := l.get(t, c, cacheHost, path, nil); !r.hit() {
			t.Fatalf("GET %s Cache-Status = %q, want a hit before purging", path, r.cacheStatus())
		}
	}

	exact := url.Values{"url": {"http://" + cacheHost + "/p/one"}}
	if status, body := l.purge(t, http.MethodPost, exact, ""); status != http.StatusUnauthorized {
		t.Errorf("purge without token = %d %q, want 401", status, body)
	}
	if status, body := l.purge(t, http.MethodPost, exact, "wrong-token"); status != http.StatusUnauthorized {
		t.Errorf("purge with a wrong token = %d %q, want 401", status, body)
	}
	if r := l.get(t, c, cacheHost, "/p/one", nil); !r.hit() {
		t.Errorf("GET /p/one after rejected purges Cache-Status = %q, want a hit", r.cacheStatus())
	}

	status, body := l.purge(t, http.MethodPost, exact, cacheAdminToken)
	if status != http.StatusOK {
		t.Fatalf("POST purge url = %d %q, want 200", status, body)
	}
	var reply struct{ Purged int }
	if err := json.Unmarshal([]byte(body), &reply); err != nil {
		t.Fatalf("purge reply %q is not JSON: %v", body, err)
	}
	if reply.Purged != 1 {
		t.Errorf("POST purge url purged %d entries, want 1", reply.Purged)
	}
	if r := l.get(t, c, cacheHost, "/p/one", nil); r.hit() {
		t.Errorf("GET /p/one after purge Cache-Status = %q, want a miss", r.cacheStatus())
	}
	if r := l.get(t, c, cacheHost, "/p/two", nil); !r.hit() {
		t.Errorf("GET /p/two after purging /p/one Cache-Status = %q, want a hit", r.cacheStatus())
	}

	prefix := url.Values{"prefix": {"http://" + cacheHost + "/p/"}}
	status, body = l.purge(t, http.MethodDelete, prefix, cacheAdminToken)
	if status != http.StatusOK {
		t.Fatalf("DELETE purge prefix = %d %q, want 200", status, body)
	}
	if err := json.Unmarshal([]byte(body), &reply); err != nil {
		t.Fatalf("purge reply %q is not JSON: %v", body, err)
	}
	if reply.Purged != 2 {
		t.Errorf("DELETE purge prefix purged %d entries, want 2 (/p/one stored again and /p/two)", reply.Purged)
	}
	if r := l.get(t, c, cacheHost, "/p/two", nil); r.hit() {
		t.Errorf("GET /p/two after prefix purge Cache-Status = %q, want a miss", r.cacheStatus())
	}
	if n := backend.count("/p/two"); n != 2 {
		t.Errorf("backend received %d requests for /p/two, want 2", n)
	}

	if status, body := l.purge(t, http.MethodPost, url.Values{}, cacheAdminToken); status != http.StatusBadRequest {
		t.Errorf("purge without url or prefix = %d %q, want 400", status, body)
	}
}

// TestL7CacheStatusField checks Cache-Status on misses, hits and responses
// that are not stored, and its absence on a route without caching.
func TestL7CacheStatusField(t *testing.T) {
	backend := startCacheBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/private") {
			w.Header().Set("Cache-Control", "no-store")
		} else {
			w.Header().Set("Cache-Control", "max-age=60")
		}
		fmt.Fprint(w, "x")
	})
	l := startCacheL7(t, backend.addr(), "")
	c := l4Client(t, "198.51.100.30:40000", nil, "")

	tests := []struct {
		name, path string
		want       []string // parameters the field must contain
		wantNone   []string // parameters it must not contain
	}{
		// The ttl is 59 or 60 because the backend's Date has whole seconds,
		// so the response may arrive with an apparent age of up to one second.
		{"miss", "/status", []string{"fwd=uri-miss", "fwd-status=200", "stored", "ttl="}, []string{"; hit"}},
		{"hit", "/status", []string{"; hit", "ttl="}, []string{"fwd="}},
		{"no-store", "/status/private", []string{"fwd=uri-miss", "fwd-status=200"}, []string{"stored", "; hit"}},
	}
	for _, tt := range tests {
		r := l.get(t, c, cacheHost, tt.path, nil)
		cs := r.cacheStatus()
		if !strings.HasPrefix(cs, "tidegate") {
			t.Errorf("%s: Cache-Status = %q, want a member named tidegate", tt.name, cs)
		}
		for _, p := range tt.want {
			if !strings.Contains(cs, p) {
				t.Errorf("%s: Cache-Status = %q, want %q in it", tt.name, cs, p)
			}
		}
		for _, p := range tt.wantNone {
			if strings.Contains(cs, p) {
				t.Errorf("%s: Cache-Status = %q, want no %q in it", tt.name, cs, p)
			}
		}
		if _, after, ok := strings.Cut(cs, "ttl="); ok {
			if ttl, err := strconv.Atoi(after); err != nil || ttl < 59 || ttl > 60 {
				t.Errorf("%s: Cache-Status = %q, want ttl 59 or 60 for max-age=60", tt.name, cs)
			}
		}
	}

	r := l.get(t, c, cacheHost, "/nocache/page", nil)
	if cs := r.cacheStatus(); cs != "" {
		t.Errorf("route without caching sent Cache-Status %q, want none", cs)
	}
}

// TestL7CacheReloadKeepsEntries reloads with SIGHUP and a new cache budget,
// then serves the entry stored before the reload. The budget is applied
// once, although the middleware is built again for every route.
func TestL7CacheReloadKeepsEntries(t *testing.T) {
	backend := startCacheBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "kept")
	})
	l := startCacheL7(t, backend.addr(), "")
	c := l4Client(t, "198.51.100.31:40000", nil, "")

	l.get(t, c, cacheHost, "/keep", nil)
	if r := l.get(t, c, cacheHost, "/keep", nil); !r.hit() {
		t.Fatalf("GET /keep Cache-Status = %q, want a hit before reloading", r.cacheStatus())
	}

	reload := func(maxSize string, reloads int) {
		t.Helper()
		writeFile(t, "", l.config, cacheConfig(l.admin, l.addr, l.backend, maxSize, l.extraListeners))
		if err := l.signal(syscall.SIGHUP); err != nil {
			t.Fatalf("send SIGHUP: %v", err)
		}
		eventually(t, 10*time.Second, fmt.Sprintf("reload %d", reloads), func() bool {
			return strings.Count(l.out.String(), "config reloaded") == reloads
		})
	}

	reload("64MiB", 1)
	r := l.get(t, c, cacheHost, "/keep", nil)
	if !r.hit() {
		t.Errorf("GET /keep after reload Cache-Status = %q, want a hit", r.cacheStatus())
	}
	if r.body != "kept" {
		t.Errorf("GET /keep after reload body = %q, want \"kept\"", r.body)
	}
	if n := strings.Count(l.out.String(), "cache resized"); n != 1 {
		t.Errorf("log has %d \"cache resized\" lines after a reload to 64MiB, want 1 for three routes", n)
	}

	// Reloading the same budget must not resize again.
	reload("64MiB", 2)
	if n := strings.Count(l.out.String(), "cache resized"); n != 1 {
		t.Errorf("log has %d \"cache resized\" lines after reloading the same budget, want still 1", n)
	}
	if r := l.get(t, c, cacheHost, "/keep", nil); !r.hit() {
		t.Errorf("GET /keep after second reload Cache-Status = %q, want a hit", r.cacheStatus())
	}
	if n := backend.count("/keep"); n != 1 {
		t.Errorf("backend received %d requests for /keep, want 1", n)
	}
	if strings.Contains(l.out.String(), "reload rejected") {
		t.Errorf("a reload was rejected:\n%s", l.out.String())
	}
}

// TestL7CacheSchemesSeparate checks that the same host and path over TLS and
// over cleartext get their own entries, and that purging the https URL
// leaves the http one.
func TestL7CacheSchemesSeparate(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSignedCert(t, dir, "cache-", cacheHost)
	tlsAddr := freeAddr(t)
	backend := startCacheBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "scheme "+r.Header.Get("X-Forwarded-Proto"))
	})
	l := startCacheL7(t, backend.addr(), fmt.Sprintf(`    - name: tls
      address: %s
      proxy_protocol:
        trusted: ["127.0.0.1/32"]
      tls:
        certificates:
          - cert_file: %s
            key_file: %s`, tlsAddr, certFile, keyFile))

	// HTTP/1.1 over TLS is the case where a connection wrapper hides r.TLS.
	tr := &http.Transport{
		DialContext:     dialL4(t, "", "198.51.100.32:40000", ""),
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: cacheHost, NextProtos: []string{"http/1.1"}},
	}
	t.Cleanup(tr.CloseIdleConnections)
	secure := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	plain := l4Client(t, "198.51.100.33:40000", nil, "")

	getTLS := func() cacheResponse {
		t.Helper()
		req := newRequest(t, http.MethodGet, "https://"+tlsAddr+"/scheme", nil)
		req.Host = cacheHost
		resp, err := secure.Do(req)
		if err != nil {
			t.Fatalf("GET over TLS: %v", err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("read body over TLS: %v", err)
		}
		return cacheResponse{status: resp.StatusCode, header: resp.Header, body: string(body)}
	}

	for round := range 2 {
		wantHit := round == 1
		s := getTLS()
		if s.body != "scheme https" {
			t.Errorf("round %d: https body = %q, want \"scheme https\"", round, s.body)
		}
		if s.hit() != wantHit {
			t.Errorf("round %d: https Cache-Status = %q, want hit %v", round, s.cacheStatus(), wantHit)
		}
		p := l.get(t, plain, cacheHost, "/scheme", nil)
		if p.body != "scheme http" {
			t.Errorf("round %d: http body = %q, want \"scheme http\"", round, p.body)
		}
		if p.hit() != wantHit {
			t.Errorf("round %d: http Cache-Status = %q, want hit %v", round, p.cacheStatus(), wantHit)
		}
	}
	if n := backend.count("/scheme"); n != 2 {
		t.Errorf("backend received %d requests for /scheme, want 2 (one per scheme)", n)
	}

	status, body := l.purge(t, http.MethodPost, url.Values{"url": {"https://" + cacheHost + "/scheme"}}, cacheAdminToken)
	if status != http.StatusOK || !strings.Contains(body, `"purged":1`) {
		t.Errorf("purge of the https URL = %d %q, want 200 and 1 entry", status, body)
	}
	if s := getTLS(); s.hit() {
		t.Errorf("https after purge Cache-Status = %q, want a miss", s.cacheStatus())
	}
	if p := l.get(t, plain, cacheHost, "/scheme", nil); !p.hit() {
		t.Errorf("http after purging https Cache-Status = %q, want a hit", p.cacheStatus())
	}
}
