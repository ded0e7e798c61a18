package cache

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/tidegate/tidegate/shared/admin"
)

func TestPurgeHandler(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		fmt.Fprint(w, r.URL.Path)
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	admin := httptest.NewServer(p.cache.PurgeHandler())
	t.Cleanup(admin.Close)

	paths := []string{"/static/a.css", "/static/b.css", "/static/img/c.png", "/index.html", "/index.html?x=1"}
	for _, path := range paths {
		p.get(t, path, "Host: www.example")
		p.get(t, path, "Host: api.example")
	}
	wantRequests(t, o, 10)

	purge := func(method, form string) (int, int) {
		t.Helper()
		req, err := http.NewRequest(method, admin.URL+"/cache/purge", strings.NewReader(form))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := admin.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct{ Purged int }
		if resp.StatusCode == 200 {
			if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
				t.Fatalf("decode purge reply: %v", err)
			}
		}
		return resp.StatusCode, out.Purged
	}

	tests := []struct {
		name   string
		method string
		form   url.Values
		status int
		purged int
	}{
		{"exact URL", http.MethodPost, url.Values{"url": {"http://www.example/index.html"}}, 200, 1},
		{"exact URL again finds nothing", http.MethodPost, url.Values{"url": {"http://www.example/index.html"}}, 200, 0},
		{"exact URL with query", http.MethodDelete, url.Values{"url": {"www.example/index.html?x=1"}}, 200, 1},
		{"prefix", http.MethodPost, url.Values{"prefix": {"http://www.example/static/"}}, 200, 3},
		{"whole host without scheme", http.MethodPost, url.Values{"prefix": {"api.example"}}, 200, 5},
		{"both url and prefix", http.MethodPost, url.Values{"url": {"a"}, "prefix": {"b"}}, 400, 0},
		{"neither", http.MethodPost, url.Values{}, 400, 0},
		{"unknown scheme", http.MethodPost, url.Values{"url": {"ftp://www.example/"}}, 400, 0},
		{"GET is not allowed", http.MethodGet, url.Values{"url": {"http://www.example/"}}, 405, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, purged := purge(tc.method, tc.form.Encode())
			if status != tc.status || purged != tc.purged {
				t.Errorf("%s %v = %d, purged %d; want %d, purged %d", tc.method, tc.form, status, purged, tc.status, tc.purged)
			}
		})
	}

	if _, n := p.cache.Stats(); n != 0 {
		t.Errorf("entries after purging everything = %d, want 0", n)
	}
	wantCacheStatus(t, p.get(t, "/static/a.css", "Host: www.example"), "fwd=uri-miss")
	if got := p.counter(t, "tidegate_l7_cache_purged_total", nil); got != 10 {
		t.Errorf("purged_total = %v, want 10", got)
	}
}

// FuzzPurgeKeys checks that any purge target either is rejected or yields
// one key per scheme, each starting with the GET method class.
func FuzzPurgeKeys(f *testing.F) {
	for _, seed := range []string{"https://example.com/a?b", "example.com", "ftp://x/", "://", "http://[::1]:80/%zz", "h/../a", ""} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, target string) {
		keys, err := purgeKeys(target)
		if err != nil {
			return
		}
		if len(keys) < 1 || len(keys) > 2 {
			t.Fatalf("purgeKeys(%q) = %d keys", target, len(keys))
		}
		for _, k := range keys {
			if !strings.HasPrefix(k, "GET http://") && !strings.HasPrefix(k, "GET https://") {
				t.Fatalf("purgeKeys(%q) gave key %q", target, k)
			}
		}
	})
}

func TestPurgeThroughAdminServer(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		fmt.Fprint(w, "x")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/doc", "Host: www.example")

	adm := admin.New("s3cret", false, slog.New(slog.DiscardHandler))
	adm.HandleMutating("POST /cache/purge", p.cache.PurgeHandler())
	if err := adm.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { adm.Shutdown(context.Background()) })
	purgeURL := "http://" + adm.Addr().String() + "/cache/purge?url=http://www.example/doc"

	resp, err := http.Post(purgeURL, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("purge without token: status %d, want 401", resp.StatusCode)
	}

	req, err := http.NewRequest(http.MethodPost, purgeURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"purged":1`) {
		t.Errorf("purge with token: status %d body %q, want 200 and purged 1", resp.StatusCode, body)
	}
	wantCacheStatus(t, p.get(t, "/doc", "Host: www.example"), "fwd=uri-miss")
}
