package l7

import (
	"net/http/httptest"
	"testing"
)

// Backends build links and redirects from X-Forwarded-Prefix and its
// relatives, and the cache does not key on them, so one forged request
// could store a poisoned response for every client.
func TestForwardingHeadersExtraNames(t *testing.T) {
	extra := map[string]string{
		"X-Forwarded-Prefix": "/evil",
		"X-Forwarded-Server": "evil",
		"X-Forwarded-Scheme": "http",
		"X-Forwarded-Ssl":    "off",
		"X-Forwarded-Uri":    "/admin",
	}
	tests := []struct {
		name        string
		client      string
		keepsExtras bool
	}{
		{name: "untrusted client", client: "203.0.113.5:1000", keepsExtras: false},
		{name: "trusted forwarder", client: "192.0.2.9:1000", keepsExtras: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := &captureTransport{}
			_, l := testServer(t, tr)
			r := clientRequest("GET", "http://www.example.test/", tc.client, true)
			for k, v := range extra {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			l.ServeHTTP(w, r)
			if w.Code != 200 {
				t.Fatalf("status %d, want 200", w.Code)
			}
			for k, v := range extra {
				got := tr.last.Header.Get(k)
				if tc.keepsExtras && got != v {
					t.Errorf("outbound %s = %q, want %q kept from a trusted forwarder", k, got, v)
				}
				if !tc.keepsExtras && got != "" {
					t.Errorf("outbound %s = %q, want it removed from an untrusted client", k, got)
				}
			}
		})
	}
}
