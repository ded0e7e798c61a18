package l7

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestFastPathValidationAndVary sends conditional and Vary requests for
// fresh stored responses to a listener on the fast path, over TCP, and
// checks the responses RFC 9111 requires of the cache there. A validator
// that matches gets 304 with the ETag (RFC 9110 sections 13.1.2 and
// 13.1.3). A stored response is reused for a request whose Vary fields
// differ only in layout or Accept-Language case (RFC 9111 section 4.1),
// and never for one whose values differ.
func TestFastPathValidationAndVary(t *testing.T) {
	lastModified := time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)
	var requests atomic.Int64
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		h := w.Header()
		h.Set("Cache-Control", "max-age=3600")
		h.Set("ETag", `"abcdef"`)
		h.Set("Last-Modified", lastModified)
		switch r.URL.Path {
		case "/foo":
			h.Set("Vary", "Foo")
		case "/lang":
			h.Set("Vary", "Accept-Language")
		}
		fmt.Fprintf(w, "body of %s", r.URL.Path)
	}))
	defer backend.Close()
	s := startCachedL7(t, fmt.Sprintf(twoListeners, strings.TrimPrefix(backend.URL, "http://")))
	fastAddr := s.Addrs()["fast"].String()

	send := func(path, fields string) (*http.Response, string) {
		t.Helper()
		c, err := net.Dial("tcp", fastAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: app.test\r\n%s\r\n", path, fields)
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodGet})
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("read body of GET %s: %v", path, err)
		}
		return resp, string(body)
	}
	send("/plain", "")
	send("/foo", "Foo: 1, 2\r\n")
	send("/lang", "Accept-Language: en, de\r\n")
	stored := requests.Load()

	for _, tc := range []struct {
		name   string
		path   string
		fields string
		status int
		hit    bool
	}{
		{"etag in list", "/plain", "If-None-Match: \"1234\", \"abcdef\"\r\n", http.StatusNotModified, true},
		{"etag mismatch", "/plain", "If-None-Match: \"1234\"\r\n", http.StatusOK, true},
		{"not modified since", "/plain", "If-Modified-Since: " + lastModified + "\r\n", http.StatusNotModified, true},
		{"vary lines combined", "/foo", "Foo: 1\r\nFoo: 2\r\n", http.StatusOK, true},
		{"vary mismatch", "/foo", "Foo: 2\r\n", http.StatusOK, false},
		{"vary language case", "/lang", "Accept-Language: EN, De\r\n", http.StatusOK, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := requests.Load()
			resp, body := send(tc.path, tc.fields)
			if resp.StatusCode != tc.status {
				t.Errorf("status = %d, want %d", resp.StatusCode, tc.status)
			}
			statuses := resp.Header.Values("Cache-Status")
			hit := len(statuses) > 0 && strings.HasPrefix(statuses[len(statuses)-1], "tidegate; hit")
			if hit != tc.hit {
				t.Errorf("Cache-Status = %q, want hit=%v", statuses, tc.hit)
			}
			if tc.hit && requests.Load() != before {
				t.Errorf("backend saw %d requests for a hit, want none", requests.Load()-before)
			}
			if tc.status == http.StatusNotModified {
				if got := resp.Header.Get("ETag"); got != `"abcdef"` {
					t.Errorf("304 ETag = %q, want \"abcdef\"", got)
				}
				if body != "" {
					t.Errorf("304 body = %q, want empty", body)
				}
				return
			}
			if want := "body of " + tc.path; body != want {
				t.Errorf("body = %q, want %q", body, want)
			}
		})
	}
	if got := requests.Load(); got != stored+1 {
		t.Errorf("backend saw %d requests after storing, want 1 for the Vary mismatch", got-stored)
	}
}

// TestFastPathInterimThenStored sends a request that misses the cache to a
// listener on the fast path while the backend sends a 103 before its final
// response. The client gets the 103 and the final response, and the hit
// that follows carries neither the 103 nor its fields, because RFC 9111
// section 3 lets a cache store only final responses.
func TestFastPathInterimThenStored(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</styles.css>; rel=preload; as=style")
		w.Header().Set("X-Early", "test")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Del("X-Early")
		w.Header().Set("Cache-Control", "max-age=3600")
		fmt.Fprint(w, "final")
	}))
	defer backend.Close()
	s := startCachedL7(t, fmt.Sprintf(twoListeners, strings.TrimPrefix(backend.URL, "http://")))
	fastAddr := s.Addrs()["fast"].String()

	// send returns the raw heads of the interim responses, then the final
	// response and its body.
	send := func() (string, *http.Response, string) {
		t.Helper()
		c, err := net.Dial("tcp", fastAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprint(c, "GET /early HTTP/1.1\r\nHost: app.test\r\n\r\n")
		br := bufio.NewReader(c)
		var interim strings.Builder
		for {
			line, err := br.Peek(12)
			if err != nil {
				t.Fatalf("read status line: %v", err)
			}
			if !strings.HasPrefix(string(line), "HTTP/1.1 1") {
				break
			}
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("read interim response: %v", err)
				}
				interim.WriteString(l)
				if l == "\r\n" {
					break
				}
			}
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
		if err != nil {
			t.Fatalf("read final response: %v", err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("read body: %v", err)
		}
		return interim.String(), resp, string(body)
	}

	interim, first, body := send()
	if !strings.HasPrefix(interim, "HTTP/1.1 103") || !strings.Contains(interim, "X-Early: test") {
		t.Errorf("interim responses before the miss = %q, want a 103 with X-Early", interim)
	}
	if first.StatusCode != http.StatusOK || body != "final" {
		t.Errorf("miss: status %d body %q, want 200 final", first.StatusCode, body)
	}
	if got := first.Header.Get("X-Early"); got != "" {
		t.Errorf("final response carries X-Early %q from the 103", got)
	}

	interim, hit, body := send()
	if interim != "" {
		t.Errorf("hit sent interim responses %q, want none", interim)
	}
	statuses := hit.Header.Values("Cache-Status")
	if len(statuses) == 0 || !strings.HasPrefix(statuses[len(statuses)-1], "tidegate; hit") {
		t.Errorf("second response Cache-Status = %q, want a hit", statuses)
	}
	if body != "final" {
		t.Errorf("hit body = %q, want final", body)
	}
	if got := hit.Header.Get("X-Early"); got != "" {
		t.Errorf("hit carries X-Early %q from the 103", got)
	}
}

// TestFastPathUnsafeMethodInvalidates stores responses through a listener
// on the fast path, then sends an unsafe method there. A 2xx response
// invalidates the target URI and its same-origin Location and
// Content-Location (RFC 9111 section 4.4), so the next GET of each goes to
// the backend. An error response leaves the stored response in place.
func TestFastPathUnsafeMethodInvalidates(t *testing.T) {
	var requests atomic.Int64
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		switch r.Method {
		case http.MethodGet:
			w.Header().Set("Cache-Control", "max-age=3600")
			fmt.Fprint(w, r.URL.Path)
		case "M-SEARCH":
			w.WriteHeader(http.StatusInternalServerError)
		default:
			w.Header().Set("Location", "/location_target")
			w.Header().Set("Content-Location", "http://"+r.Host+"/content_location_target")
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	defer backend.Close()
	s := startCachedL7(t, fmt.Sprintf(twoListeners, strings.TrimPrefix(backend.URL, "http://")))
	fastAddr := s.Addrs()["fast"].String()

	sendUnsafe := func(method, path string) *http.Response {
		t.Helper()
		c, err := net.Dial("tcp", fastAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\n\r\nabc", method, path)
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	// get sends GET path and reports whether the response was a hit.
	get := func(path string) bool {
		t.Helper()
		c, err := net.Dial("tcp", fastAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: app.test\r\n\r\n", path)
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodGet})
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		statuses := resp.Header.Values("Cache-Status")
		return len(statuses) > 0 && strings.HasPrefix(statuses[len(statuses)-1], "tidegate; hit")
	}
	paths := []string{"/target", "/location_target", "/content_location_target"}

	for _, tc := range []struct {
		method     string
		status     int
		invalidate bool
	}{
		{"M-SEARCH", http.StatusInternalServerError, false},
		{http.MethodPost, http.StatusNoContent, true},
		{http.MethodPut, http.StatusNoContent, true},
		{http.MethodDelete, http.StatusNoContent, true},
	} {
		t.Run(tc.method, func(t *testing.T) {
			for _, path := range paths {
				get(path)
			}
			if resp := sendUnsafe(tc.method, "/target"); resp.StatusCode != tc.status {
				t.Fatalf("%s status = %d, want %d", tc.method, resp.StatusCode, tc.status)
			}
			for _, path := range paths {
				if hit := get(path); hit == tc.invalidate {
					t.Errorf("GET %s after %s: hit=%v, want invalidated=%v", path, tc.method, hit, tc.invalidate)
				}
			}
		})
	}
}
