package upstream

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tidegate/tidegate/shared/config"
)

// TestExchangeStaleReplayOnlyIdempotent has the backend read a request on
// a reused connection and close it without a response. The backend may
// have acted on the request, so only a request that may be replayed goes
// again on a new connection, as with net/http's transport: a POST must
// reach the backend once and fail.
func TestExchangeStaleReplayOnlyIdempotent(t *testing.T) {
	cases := []struct {
		name     string
		method   string
		header   http.Header
		replayed bool
	}{
		{name: "get", method: "GET", replayed: true},
		{name: "options", method: "OPTIONS", replayed: true},
		{name: "post", method: "POST"},
		{name: "delete", method: "DELETE"},
		{name: "post with idempotency key", method: "POST", header: http.Header{"Idempotency-Key": {"k1"}}, replayed: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, via := range []string{"direct", "transport"} {
				backend := newScriptedBackend(t, func(_ *http.Request, n int) (string, bool) {
					if n == 1 {
						return "", true
					}
					return okResponse, false
				})
				cfg := config.Upstream{Backends: []config.Backend{{Address: backend.addr}}, MaxIdlePerBackend: 4}
				p := testPool(t, cfg)
				if via == "transport" {
					p = testPool(t, cfg, WithTransport(struct{ http.RoundTripper }{p.newTransport()}))
				}
				first := httptest.NewRequest("GET", "http://front.test/", nil)
				first.RequestURI = ""
				roundTripBody(t, p, first)

				req := httptest.NewRequest(tc.method, "http://front.test/act", nil)
				req.RequestURI = ""
				req.Body = nil
				for k, v := range tc.header {
					req.Header[k] = v
				}
				resp, err := p.RoundTrip(req)
				if err == nil {
					resp.Body.Close()
				}
				if tc.replayed && err != nil {
					t.Errorf("%s: %s on a stale connection = %v, want a replay and a response", via, tc.method, err)
				}
				if !tc.replayed && err == nil {
					t.Errorf("%s: %s on a stale connection succeeded, want an error and no replay", via, tc.method)
				}

				backend.mu.Lock()
				acts := 0
				for _, r := range backend.requests {
					if r.URL.Path == "/act" {
						acts++
					}
				}
				backend.mu.Unlock()
				want := 1
				if tc.replayed {
					want = 2
				}
				if acts != want {
					t.Errorf("%s: backend received %s /act %d times, want %d", via, tc.method, acts, want)
				}
			}
		})
	}
}
