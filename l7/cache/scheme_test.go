package cache

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tidegate/tidegate/l7/conninfo"
)

func TestRequestSchemeFromConnInfo(t *testing.T) {
	tests := []struct {
		name     string
		stateTLS bool // r.TLS set, as net/http does for a *tls.Conn
		info     *conninfo.Info
		want     string
	}{
		{"cleartext", false, nil, "http"},
		{"r.TLS", true, nil, "https"},
		{"conninfo TLS behind a connection wrapper", false, &conninfo.Info{TLS: true}, "https"},
		{"conninfo cleartext", false, &conninfo.Info{}, "http"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "http://example.com/a", nil)
			r.TLS = nil
			if tc.stateTLS {
				r.TLS = &tls.ConnectionState{}
			}
			if tc.info != nil {
				r = r.WithContext(conninfo.NewContext(r.Context(), tc.info))
			}
			if got := requestScheme(r); got != tc.want {
				t.Errorf("requestScheme = %q, want %q", got, tc.want)
			}
			if got, want := buildKey(r, nil).primary, "GET "+tc.want+"://example.com/a"; got != want {
				t.Errorf("buildKey = %q, want %q", got, want)
			}
		})
	}
}
