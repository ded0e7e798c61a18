//go:build integration

package integration

import (
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// clientFrom returns an HTTP client whose connections leave from local,
// one connection per request so the L4 balances every request anew.
func clientFrom(local string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 3 * time.Second}
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true},
	}
}

// limitResult is the status and rate-limit headers of one response.
type limitResult struct {
	status     int
	retryAfter string
	rateLimit  string
}

// TestL7PolicyRateLimitThroughL4 runs a real tidegate l4 in front of a real
// tidegate l7 whose route allows 10 requests per second with a burst of 5
// per client. A client on 127.0.0.2 sends 40 requests at 25 per second,
// each with a different X-Forwarded-For, and must see 429 with Retry-After.
// A client on 127.0.0.3 sends 4 requests per second at the same time and
// must see none, which shows the key is the client address from the PROXY
// header and not the L4's address or a header the client controls.
func TestL7PolicyRateLimitThroughL4(t *testing.T) {
	dir := t.TempDir()
	backendAddr, _ := startEcho(t, "echo")
	l7Addr := freeAddr(t)
	logPath := filepath.Join(dir, "access.log")
	startL7(t, dir, fmt.Sprintf(`
listeners:
  - name: edge
    address: %s
    proxy_protocol: {trusted: [127.0.0.1/32], timeout: 2s}
routes:
  - name: limited
    upstream: echo
    policy:
      rate_limit: {requests: 10, per: 1s, burst: 5}
upstreams:
  - name: echo
    backends:
      - address: %s
access_log:
  path: %s
`, l7Addr, backendAddr, logPath))

	vip := freeAddr(t)
	startL4(t, l4Config(vip, []string{l7Addr}, ""))
	url := "http://" + vip + "/limited"

	// The second client runs until the first one is done.
	done := make(chan struct{})
	var wg sync.WaitGroup
	var second []limitResult
	wg.Add(1)
	go func() {
		defer wg.Done()
		c := clientFrom("127.0.0.3")
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			resp, err := c.Get(url)
			if err != nil {
				second = append(second, limitResult{status: -1, retryAfter: err.Error()})
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			second = append(second, limitResult{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")})
		}
	}()

	c := clientFrom("127.0.0.2")
	var first []limitResult
	pace := time.NewTicker(40 * time.Millisecond)
	defer pace.Stop()
	start := time.Now()
	for i := range 40 {
		<-pace.C
		req := newRequest(t, http.MethodGet, url, nil)
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("198.51.100.%d", i+1))
		req.Header.Set("X-Real-IP", fmt.Sprintf("198.51.100.%d", i+1))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("request %d from 127.0.0.2: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		first = append(first, limitResult{resp.StatusCode, resp.Header.Get("Retry-After"), resp.Header.Get("RateLimit")})
	}
	elapsed := time.Since(start)
	close(done)
	wg.Wait()

	allowed, limited := 0, 0
	for i, r := range first {
		switch r.status {
		case http.StatusOK:
			allowed++
		case http.StatusTooManyRequests:
			limited++
			secs, err := strconv.Atoi(r.retryAfter)
			if err != nil || secs < 1 {
				t.Errorf("request %d: 429 with Retry-After %q, want whole seconds >= 1", i, r.retryAfter)
			}
		default:
			t.Errorf("request %d from 127.0.0.2: status %d, want 200 or 429", i, r.status)
		}
		if r.rateLimit == "" {
			t.Errorf("request %d: response without a RateLimit header", i)
		}
	}
	if limited == 0 {
		t.Errorf("127.0.0.2 got no 429 in 40 requests (varying X-Forwarded-For must not evade the limit)")
	}
	// A token bucket of 5 refilled at 10/s admits at most this many in the
	// time the requests took. The extra one covers a refill in flight.
	maxAllowed := 5 + int(math.Ceil(elapsed.Seconds()*10)) + 1
	if allowed > maxAllowed {
		t.Errorf("127.0.0.2 got %d requests through in %s, want at most %d", allowed, elapsed, maxAllowed)
	}
	t.Logf("127.0.0.2: %d allowed, %d limited in %s", allowed, limited, elapsed)

	if len(second) < 3 {
		t.Fatalf("127.0.0.3 sent only %d requests", len(second))
	}
	for i, r := range second {
		if r.status != http.StatusOK {
			t.Errorf("request %d from 127.0.0.3: status %d (%s), want 200", i, r.status, r.retryAfter)
		}
	}

	// The access log shows the decisions under the real client addresses.
	eventually(t, 5*time.Second, "access log lines for both clients", func() bool {
		return len(accessLogLines(t, logPath)) >= len(first)+len(second)
	})
	rejected := map[string]int{}
	for _, line := range accessLogLines(t, logPath) {
		if line["ratelimit_result"] == "rejected" {
			rejected[fmt.Sprint(line["client_addr"])]++
		}
	}
	if rejected["127.0.0.2"] != limited {
		t.Errorf("access log has %d rejected lines for 127.0.0.2, want %d", rejected["127.0.0.2"], limited)
	}
	if rejected["127.0.0.3"] != 0 {
		t.Errorf("access log has %d rejected lines for 127.0.0.3, want 0", rejected["127.0.0.3"])
	}
}
