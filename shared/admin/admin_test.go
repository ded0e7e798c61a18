package admin

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHandleMutatingChecks(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := New("secret", false, logger)
	calls := 0
	s.HandleMutating("POST /change", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
	}))

	tests := []struct {
		name    string
		headers map[string]string
		want    int
	}{
		{"no token", nil, http.StatusUnauthorized},
		{"wrong token", map[string]string{"Authorization": "Bearer nope"}, http.StatusUnauthorized},
		{"token from curl", map[string]string{"Authorization": "Bearer secret"}, http.StatusOK},
		{"token from the same origin", map[string]string{"Authorization": "Bearer secret", "Sec-Fetch-Site": "same-origin", "Origin": "http://admin.test"}, http.StatusOK},
		{"token from a cross-site page", map[string]string{"Authorization": "Bearer secret", "Sec-Fetch-Site": "cross-site", "Origin": "http://attacker.invalid"}, http.StatusForbidden},
		{"old browser, other origin", map[string]string{"Authorization": "Bearer secret", "Origin": "http://attacker.invalid"}, http.StatusForbidden},
	}
	for _, tc := range tests {
		before := calls
		req := httptest.NewRequest(http.MethodPost, "http://admin.test/change", nil)
		for k, v := range tc.headers {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		s.mux.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, rec.Code, tc.want)
		}
		if ran := calls > before; ran != (tc.want == http.StatusOK) {
			t.Errorf("%s: handler ran = %v, want %v", tc.name, ran, tc.want == http.StatusOK)
		}
	}
}

func TestHandleMutatingCrossOriginWithoutToken(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := New("", false, logger)
	s.HandleMutating("POST /change", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))

	req := httptest.NewRequest(http.MethodPost, "http://admin.test/change", nil)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	rec := httptest.NewRecorder()
	s.mux.ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden {
		t.Errorf("cross-site POST without a token configured: status %d, want 403", rec.Code)
	}
}

// RFC 9110 section 11.1 makes the authentication scheme case-insensitive,
// so clients that send "bearer" must be accepted like "Bearer".
func TestHandleMutatingBearerSchemeCase(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := New("secret", false, logger)
	s.HandleMutating("POST /change", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))

	tests := []struct {
		header string
		want   int
	}{
		{"bearer secret", http.StatusOK},
		{"BEARER secret", http.StatusOK},
		{"Bearer  secret", http.StatusUnauthorized},
		{"Basic secret", http.StatusUnauthorized},
		{"Bearer", http.StatusUnauthorized},
		{"bearer wrong", http.StatusUnauthorized},
	}
	for _, tc := range tests {
		req := httptest.NewRequest(http.MethodPost, "http://admin.test/change", nil)
		req.Header.Set("Authorization", tc.header)
		rec := httptest.NewRecorder()
		s.mux.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("Authorization %q: status %d, want %d", tc.header, rec.Code, tc.want)
		}
	}
}

// Profiles show the process's command line and call stacks and a CPU
// profile runs for as long as the client asks, so with a token set the
// pprof endpoints need it like the mutating ones.
func TestPprofNeedsToken(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	s := New("secret", true, logger)
	tests := []struct {
		header string
		want   int
	}{
		{"", http.StatusUnauthorized},
		{"Bearer wrong", http.StatusUnauthorized},
		{"Bearer secret", http.StatusOK},
	}
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/goroutine"} {
		for _, tc := range tests {
			req := httptest.NewRequest(http.MethodGet, "http://admin.test"+path, nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			rec := httptest.NewRecorder()
			s.mux.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Errorf("GET %s with Authorization %q: status %d, want %d", path, tc.header, rec.Code, tc.want)
			}
		}
	}

	open := New("", true, logger)
	req := httptest.NewRequest(http.MethodGet, "http://admin.test/debug/pprof/cmdline", nil)
	rec := httptest.NewRecorder()
	open.mux.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Errorf("GET /debug/pprof/cmdline without a token configured: status %d, want 200", rec.Code)
	}
}
