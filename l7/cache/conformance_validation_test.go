package cache

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests check validation, Vary, invalidation, header updates, ranges,
// Authorization and interim responses against RFC 9111 and RFC 9110. Each
// case sends requests through the cache middleware to an origin on
// 127.0.0.1, with the test clock standing in for the passage of time.

// respondWith returns an origin handler that sets the given "Name: value"
// fields, in order, and writes body. Repeated names add lines.
func respondWith(t *testing.T, body string, fields ...string) http.HandlerFunc {
	t.Helper()
	for _, f := range fields {
		if !strings.Contains(f, ":") {
			t.Fatalf("header field %q has no colon", f)
		}
	}
	return func(w http.ResponseWriter, r *http.Request) {
		for _, f := range fields {
			name, value, _ := strings.Cut(f, ":")
			w.Header().Add(name, strings.TrimSpace(value))
		}
		fmt.Fprint(w, body)
	}
}

// wantServedFromCache checks that r is a hit and that the origin still saw
// only requests requests.
func wantServedFromCache(t *testing.T, o *origin, requests int64, r result) {
	t.Helper()
	if cs := r.header.Get("Cache-Status"); !strings.Contains(cs, "; hit") {
		t.Errorf("Cache-Status = %q, want a hit", cs)
	}
	wantRequests(t, o, requests)
}

// wantForwarded checks that r was not served from a stored response.
func wantForwarded(t *testing.T, r result) {
	t.Helper()
	if cs := r.header.Get("Cache-Status"); strings.Contains(cs, "; hit") || !strings.Contains(cs, "fwd=") {
		t.Errorf("Cache-Status = %q, want the request forwarded", cs)
	}
}

// TestValidationIfNoneMatchOnFreshHit evaluates a client's If-None-Match
// against a fresh stored response with the weak comparison over a list of
// entity tags (RFC 9110 section 13.1.2). A match gets a 304 with the ETag
// (RFC 9110 section 15.4.5), and a mismatch gets the full response.
// A value that is not a valid entity tag never matches, so its sender gets
// the full response, which is always correct.
func TestValidationIfNoneMatchOnFreshHit(t *testing.T) {
	for _, tc := range []struct {
		name   string
		etag   string
		inm    string
		status int
	}{
		{name: "strong match", etag: `"abcdef"`, inm: `"abcdef"`, status: 304},
		{name: "weak match", etag: `W/"abcdef"`, inm: `W/"abcdef"`, status: 304},
		{name: "weak request strong stored", etag: `"abcdef"`, inm: `W/"abcdef"`, status: 304},
		{name: "first of list", etag: `"abcdef"`, inm: `"abcdef", "1234", "5678"`, status: 304},
		{name: "middle of list", etag: `"abcdef"`, inm: `"1234", "abcdef", "5678"`, status: 304},
		{name: "last of list", etag: `"abcdef"`, inm: `"1234", "5678", "abcdef"`, status: 304},
		{name: "obs-text", etag: "\"abcdef\xc3\xbc\"", inm: "\"abcdef\xc3\xbc\"", status: 304},
		{name: "no match", etag: `"abcdef"`, inm: `"1234"`, status: 200},
		{name: "unquoted request", etag: `"abcdef"`, inm: `abcdef`, status: 200},
		{name: "unquoted both", etag: `abcdef`, inm: `abcdef`, status: 200},
		{name: "lower-case weak flag", etag: `w/"abcdef"`, inm: `w/"abcdef"`, status: 200},
		{name: "weak flag without slash", etag: `W"abcdef"`, inm: `W"abcdef"`, status: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newTestClock()
			o := newOrigin(t, clock, respondWith(t, "body", "Cache-Control: max-age=100000", "ETag: "+tc.etag))
			p := newTestProxy(t, clock, o, defaultPolicy())
			p.get(t, "/inm")

			r := p.get(t, "/inm", "If-None-Match: "+tc.inm)
			wantStatus(t, r, tc.status)
			wantServedFromCache(t, o, 1, r)
			if got := r.header.Get("ETag"); got != tc.etag {
				t.Errorf("ETag = %q, want the stored %q", got, tc.etag)
			}
			wantBody := "body"
			if tc.status == 304 {
				wantBody = ""
			}
			if r.body != wantBody {
				t.Errorf("body = %q, want %q", r.body, wantBody)
			}
		})
	}
}

// TestValidationIfModifiedSinceOnFreshHit evaluates If-Modified-Since
// against a fresh stored response. The cache sends 304 when Last-Modified
// is not later than the date (RFC 9110 section 13.1.3), and compares with
// Date when Last-Modified is missing (RFC 9111 section 4.3.2). It accepts
// the obsolete RFC 850 date format (RFC 9110 section 5.6.7), and
// If-None-Match takes precedence (RFC 9110 section 13.2.2).
func TestValidationIfModifiedSinceOnFreshHit(t *testing.T) {
	clock := newTestClock()
	now := clock.Now()
	lastModified := now.Add(-3000 * time.Second)
	httpDate := func(t time.Time) string { return t.UTC().Format(http.TimeFormat) }
	rfc850 := func(t time.Time) string { return t.UTC().Format(time.RFC850) }

	for _, tc := range []struct {
		name   string
		stored []string
		fields []string
		status int
	}{
		{
			name:   "same as last-modified",
			stored: []string{"Last-Modified: " + httpDate(lastModified)},
			fields: []string{"If-Modified-Since: " + httpDate(lastModified)},
			status: 304,
		},
		{
			name:   "after last-modified",
			stored: []string{"Last-Modified: " + httpDate(lastModified)},
			fields: []string{"If-Modified-Since: " + httpDate(now.Add(-2000*time.Second))},
			status: 304,
		},
		{
			name:   "before last-modified",
			stored: []string{"Last-Modified: " + httpDate(lastModified)},
			fields: []string{"If-Modified-Since: " + httpDate(lastModified.Add(-time.Second))},
			status: 200,
		},
		{
			name:   "date without last-modified",
			fields: []string{"If-Modified-Since: " + httpDate(now)},
			status: 304,
		},
		{
			name:   "date after the condition",
			fields: []string{"If-Modified-Since: " + httpDate(now.Add(-3000*time.Second))},
			status: 200,
		},
		{
			name:   "rfc 850 date",
			stored: []string{"Last-Modified: " + httpDate(lastModified)},
			fields: []string{"If-Modified-Since: " + rfc850(lastModified)},
			status: 304,
		},
		{
			name:   "etag match wins over older date",
			stored: []string{"Last-Modified: " + httpDate(lastModified), `ETag: "abcdef"`},
			fields: []string{`If-None-Match: "abcdef"`, "If-Modified-Since: " + httpDate(lastModified.Add(-time.Hour))},
			status: 304,
		},
		{
			name:   "etag mismatch wins over matching date",
			stored: []string{"Last-Modified: " + httpDate(lastModified), `ETag: "abcdef"`},
			fields: []string{`If-None-Match: "other"`, "If-Modified-Since: " + httpDate(now)},
			status: 200,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newTestClock()
			fields := append([]string{"Cache-Control: max-age=100000"}, tc.stored...)
			o := newOrigin(t, clock, respondWith(t, "body", fields...))
			p := newTestProxy(t, clock, o, defaultPolicy())
			p.get(t, "/ims")

			r := p.get(t, "/ims", tc.fields...)
			wantStatus(t, r, tc.status)
			wantServedFromCache(t, o, 1, r)
		})
	}
}

// TestValidationStaleAnswersClientAfter304 revalidates a stale response
// for a client that sent If-Modified-Since. The cache sends its own
// validator (RFC 9111 section 4.3.1) and freshens the stored response with
// the origin's 304 (section 4.3.4). Then it evaluates the client's
// condition against the stored response (section 4.3.2).
func TestValidationStaleAnswersClientAfter304(t *testing.T) {
	clock := newTestClock()
	lastModified := clock.Now().Add(-3000 * time.Second).Format(http.TimeFormat)
	o := newOrigin(t, clock, respondWith(t, "body", "Cache-Control: max-age=2", "Last-Modified: "+lastModified))
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/lm")
	clock.Advance(3 * time.Second)

	o.set(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=2")
		w.WriteHeader(http.StatusNotModified)
	})
	r := p.get(t, "/lm", "If-Modified-Since: "+lastModified)
	wantStatus(t, r, http.StatusNotModified)
	wantRequests(t, o, 2)
	if got := o.lastHeader().Get("If-Modified-Since"); got != lastModified {
		t.Errorf("origin saw If-Modified-Since %q, want %q", got, lastModified)
	}
	wantCacheStatus(t, r, "fwd=stale", "fwd-status=304")
}

// TestValidationGeneratesIfNoneMatch revalidates a stale response with its
// stored entity tag, strong or weak, unchanged (RFC 9111 section 4.3.1),
// and keeps the request fields that Vary names in the conditional request,
// so the origin chooses the same representation.
func TestValidationGeneratesIfNoneMatch(t *testing.T) {
	expires := newTestClock().Now().Add(time.Second).Format(http.TimeFormat)
	for _, tc := range []struct {
		etag      string
		freshness string
	}{
		{`"abcdef"`, "Cache-Control: max-age=2"},
		{`W/"abcdef"`, "Cache-Control: max-age=2"},
		{`"abcdef"`, "Expires: " + expires},
	} {
		etag := tc.etag
		t.Run(etag+" "+strings.SplitN(tc.freshness, ":", 2)[0], func(t *testing.T) {
			clock := newTestClock()
			o := newOrigin(t, clock, respondWith(t, "body", tc.freshness, "ETag: "+etag, "Vary: Abc"))
			p := newTestProxy(t, clock, o, defaultPolicy())
			p.get(t, "/gen", "Abc: 123")
			clock.Advance(3 * time.Second)

			o.set(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("ETag", etag)
				w.WriteHeader(http.StatusNotModified)
			})
			r := p.get(t, "/gen", "Abc: 123")
			wantStatus(t, r, 200)
			if r.body != "body" {
				t.Errorf("body = %q, want the stored body", r.body)
			}
			wantCacheStatus(t, r, "fwd-status=304")
			seen := o.lastHeader()
			if got := seen.Get("If-None-Match"); got != etag {
				t.Errorf("origin saw If-None-Match %q, want %q", got, etag)
			}
			if got := seen.Get("Abc"); got != "123" {
				t.Errorf("origin saw Abc %q, want 123 from the request", got)
			}
		})
	}
}

// TestValidationVaryMismatchNotConditional checks that a stored response
// whose Vary does not match the request is not used to validate it, so the
// origin gets a plain request. RFC 9111 section 4.3.1 allows sending the
// entity tags of other variants but does not require it.
func TestValidationVaryMismatchNotConditional(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, respondWith(t, "body", "Cache-Control: max-age=10000", `ETag: "abcdef"`, "Vary: Abc"))
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/vm", "Abc: 123")

	r := p.get(t, "/vm", "Abc: 456")
	wantForwarded(t, r)
	wantRequests(t, o, 2)
	if got := o.lastHeader().Get("If-None-Match"); got != "" {
		t.Errorf("origin saw If-None-Match %q, want none", got)
	}
}

// TestValidationVarySelectsStored reuses a stored response with Vary only
// when every field it names matches the request, and a field absent from
// both requests matches (RFC 9111 section 4.1). Values are compared after
// combining lines and removing whitespace around list members. Fields that
// Vary does not name are ignored.
func TestValidationVarySelectsStored(t *testing.T) {
	for _, tc := range []struct {
		name   string
		vary   string
		first  []string
		second []string
		hit    bool
	}{
		{name: "match", vary: "Foo", first: []string{"Foo: 1"}, second: []string{"Foo: 1"}, hit: true},
		{name: "mismatch", vary: "Foo", first: []string{"Foo: 1"}, second: []string{"Foo: 2"}},
		{name: "stored request omits field", vary: "Foo", second: []string{"Foo: 1"}},
		{name: "request omits field", vary: "Foo", first: []string{"Foo: 1"}},
		{name: "other field ignored", vary: "Foo", first: []string{"Foo: 1", "Other: 2"}, second: []string{"Foo: 1", "Other: 3"}, hit: true},
		{name: "two fields match", vary: "Foo, Bar", first: []string{"Foo: 1", "Bar: abc"}, second: []string{"Foo: 1", "Bar: abc"}, hit: true},
		{name: "two fields mismatch", vary: "Foo, Bar", first: []string{"Foo: 1", "Bar: abc"}, second: []string{"Foo: 2", "Bar: abc"}},
		{name: "two fields omitted", vary: "Foo, Bar", first: []string{"Foo: 1", "Bar: abc"}},
		{name: "three fields match", vary: "Foo, Bar, Baz", first: []string{"Foo: 1", "Bar: abc", "Baz: 789"}, second: []string{"Foo: 1", "Bar: abc", "Baz: 789"}, hit: true},
		{name: "three fields mismatch", vary: "Foo, Bar, Baz", first: []string{"Foo: 1", "Bar: abc", "Baz: 789"}, second: []string{"Foo: 2", "Bar: abc", "Baz: 789"}},
		{name: "three fields other order", vary: "Foo, Bar, Baz", first: []string{"Foo: 1", "Bar: abc", "Baz: 789"}, second: []string{"Foo: 1", "Baz: 789", "Bar: abcde"}},
		{name: "field omitted by both", vary: "Foo, Bar, Baz", first: []string{"Foo: 1", "Baz: 789"}, second: []string{"Foo: 1", "Baz: 789"}, hit: true},
		{name: "lines combined", vary: "Foo", first: []string{"Foo: 1, 2"}, second: []string{"Foo: 1", "Foo: 2"}, hit: true},
		{name: "whitespace removed", vary: "Foo", first: []string{"Foo: 1,2"}, second: []string{"Foo:  1, 2 "}, hit: true},
		{name: "language whitespace", vary: "Accept-Language", first: []string{"Accept-Language: en, de"}, second: []string{"Accept-Language:  en ,   de"}, hit: true},
		{name: "language case", vary: "Accept-Language", first: []string{"Accept-Language: en, de"}, second: []string{"Accept-Language: eN, De"}, hit: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newTestClock()
			lastModified := clock.Now().Add(-3000 * time.Second).Format(http.TimeFormat)
			o := newOrigin(t, clock, respondWith(t, "body",
				"Cache-Control: max-age=5000", "Last-Modified: "+lastModified, "Vary: "+tc.vary))
			p := newTestProxy(t, clock, o, defaultPolicy())
			wantCacheStatus(t, p.get(t, "/vary", tc.first...), "stored")

			r := p.get(t, "/vary", tc.second...)
			if tc.hit {
				wantServedFromCache(t, o, 1, r)
				return
			}
			wantForwarded(t, r)
			wantRequests(t, o, 2)
		})
	}
}

// TestValidationVaryKeepsBothVariants stores two responses that differ by
// a Vary field and serves each to the matching request (RFC 9111 section
// 4.1): storing the second must not replace the first.
func TestValidationVaryKeepsBothVariants(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=5000")
		w.Header().Set("Vary", "Foo")
		fmt.Fprintf(w, "foo_%s", r.Header.Get("Foo"))
	})
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/two", "Foo: 1")
	wantCacheStatus(t, p.get(t, "/two", "Foo: 2"), "fwd=vary-miss", "stored")

	for _, foo := range []string{"1", "2"} {
		r := p.get(t, "/two", "Foo: "+foo)
		wantServedFromCache(t, o, 2, r)
		if want := "foo_" + foo; r.body != want {
			t.Errorf("Foo %s: body = %q, want %q", foo, r.body, want)
		}
	}
}

// TestValidationVaryStarNeverReused checks every way of writing "*" in
// Vary, alone, repeated, after an empty member or beside a field name, on
// one line or several: such a response always fails to match (RFC 9111
// section 4.1).
func TestValidationVaryStarNeverReused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lines []string
	}{
		{"star", []string{"*"}},
		{"star star", []string{"*, *"}},
		{"star star lines", []string{"*", "*"}},
		{"empty star", []string{", *"}},
		{"empty star lines", []string{"", "*"}},
		{"star field", []string{"*, Foo"}},
		{"field star", []string{"Foo, *"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newTestClock()
			o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=5000")
				w.Header()["Vary"] = tc.lines
				fmt.Fprint(w, "body")
			})
			p := newTestProxy(t, clock, o, defaultPolicy())
			p.get(t, "/star", "Foo: 1", "Baz: 789")

			r := p.get(t, "/star", "Foo: 1", "Baz: 789")
			wantForwarded(t, r)
			wantRequests(t, o, 2)
		})
	}
}

// TestValidationUnsafeMethodInvalidates sends each unsafe method, including
// an extension method the cache does not know, after storing the target
// URI and the URIs its response names in Location and Content-Location,
// as relative references or absolute URIs of the same origin. A 2xx or 3xx
// response invalidates all three, and an error response invalidates
// nothing (RFC 9111 section 4.4).
func TestValidationUnsafeMethodInvalidates(t *testing.T) {
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, "M-SEARCH"} {
		for _, tc := range []struct {
			name       string
			status     int
			absolute   bool
			invalidate bool
		}{
			{"success", http.StatusOK, false, true},
			{"success absolute", http.StatusOK, true, true},
			{"failure", http.StatusInternalServerError, false, false},
		} {
			t.Run(method+" "+tc.name, func(t *testing.T) {
				clock := newTestClock()
				o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
					if r.Method == method {
						base := ""
						if tc.absolute {
							base = "http://" + r.Host
						}
						w.Header().Set("Location", base+"/location_target")
						w.Header().Set("Content-Location", base+"/content_location_target")
						w.WriteHeader(tc.status)
						return
					}
					w.Header().Set("Cache-Control", "max-age=100000")
					fmt.Fprint(w, r.URL.Path)
				})
				p := newTestProxy(t, clock, o, defaultPolicy())
				paths := []string{"/target", "/location_target", "/content_location_target"}
				for _, path := range paths {
					p.get(t, path)
				}

				wantStatus(t, p.do(t, method, "/target"), tc.status)
				wantRequests(t, o, 4)

				for _, path := range paths {
					r := p.get(t, path)
					hit := strings.Contains(r.header.Get("Cache-Status"), "; hit")
					if hit == tc.invalidate {
						t.Errorf("GET %s after %s %d: Cache-Status %q, want invalidated=%v",
							path, method, tc.status, r.header.Get("Cache-Status"), tc.invalidate)
					}
				}
			})
		}
	}
}

// TestValidation304UpdatesStoredFields revalidates a stored response and
// checks each field the 304 changes (RFC 9111 sections 3.2 and 4.3.4):
// the 304's fields replace the stored ones, and the cache then serves the
// updated response. Content-Length is never updated. Content-Encoding and
// Content-Range describe the stored body, so the cache keeps them, as
// section 3.2 allows for fields the stored response depends on.
func TestValidation304UpdatesStoredFields(t *testing.T) {
	for _, tc := range []struct {
		name         string
		stored, sent string
		updated      bool
	}{
		{name: "Unknown-Field", stored: "value-A", sent: "value-B", updated: true},
		{name: "X-Unknown-Field", stored: "value-A", sent: "value-B", updated: true},
		{name: "Content-Unknown", stored: "value-A", sent: "value-B", updated: true},
		{name: "X-Content-Unknown", stored: "value-A", sent: "value-B", updated: true},
		{name: "Cache-Control", stored: "max-age=1", sent: "max-age=3600", updated: true},
		{name: "Content-Location", stored: "/foo", sent: "/bar", updated: true},
		{name: "Content-MD5", stored: "AAECAwQFBgcICQoLDA0ODw==", sent: "EBESExQVFhcYGRobHB0eHw==", updated: true},
		{name: "Content-Security-Policy", stored: "default-src 'self'", sent: "default-src 'none'", updated: true},
		{name: "Content-Type", stored: "text/plain", sent: "text/plain;charset=utf-8", updated: true},
		{name: "Clear-Site-Data", stored: "cache", sent: "cookies", updated: true},
		{name: "Expires", stored: "Fri, 01 Jan 2038 01:01:01 GMT", sent: "Mon, 11 Jan 2038 11:11:11 GMT", updated: true},
		{name: "Public-Key-Pins", stored: "value-A", sent: "value-B", updated: true},
		{name: "X-Frame-Options", stored: "deny", sent: "sameorigin", updated: true},
		{name: "X-XSS-Protection", stored: "1", sent: "1; mode=block", updated: true},
		{name: "Content-Encoding", stored: "value-A", sent: "value-B"},
		{name: "Content-Length", stored: "5", sent: "10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newTestClock()
			etag := `"` + tc.name + `-etag-1"`
			fields := func(value string) []string {
				f := []string{tc.name + ": " + value, "ETag: " + etag}
				if tc.name != "Cache-Control" {
					f = append(f, "Cache-Control: max-age=2")
				}
				return f
			}
			o := newOrigin(t, clock, respondWith(t, "12345", fields(tc.stored)...))
			p := newTestProxy(t, clock, o, defaultPolicy())
			first := p.get(t, "/u", "Accept-Encoding: value-A")
			if first.body != "12345" {
				t.Fatalf("first body = %q, want 12345", first.body)
			}
			clock.Advance(3 * time.Second)

			// net/http drops Content-Type and Content-Length from a 304, so
			// the origin writes this one on the raw connection.
			o.set(func(w http.ResponseWriter, r *http.Request) {
				writeRaw304(t, w, append(fields(tc.sent), "Date: "+clock.Now().Format(http.TimeFormat)))
			})
			want := tc.stored
			if tc.updated {
				want = tc.sent
			}
			revalidated := p.get(t, "/u", "Accept-Encoding: value-A")
			wantCacheStatus(t, revalidated, "fwd-status=304")
			stored := p.get(t, "/u", "Accept-Encoding: value-A")
			wantServedFromCache(t, o, 2, stored)
			for step, r := range map[string]result{"revalidated": revalidated, "stored": stored} {
				wantStatus(t, r, 200)
				if got := r.header.Get(tc.name); got != want {
					t.Errorf("%s response: %s = %q, want %q", step, tc.name, got, want)
				}
				if r.body != "12345" {
					t.Errorf("%s response: body = %q, want the stored 12345", step, r.body)
				}
			}
		})
	}
}

// writeRaw304 hijacks the connection of w and writes a 304 with fields on
// it, then closes the connection.
func writeRaw304(t *testing.T, w http.ResponseWriter, fields []string) {
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.Errorf("hijack origin connection: %v", err)
		return
	}
	defer conn.Close()
	fmt.Fprint(buf, "HTTP/1.1 304 Not Modified\r\nConnection: close\r\n")
	for _, f := range fields {
		fmt.Fprintf(buf, "%s\r\n", f)
	}
	fmt.Fprint(buf, "\r\n")
	if err := buf.Flush(); err != nil {
		t.Errorf("write 304: %v", err)
	}
}

// TestValidation304KeepsFieldsItOmits checks that a stored field the 304
// does not carry is still served after the update (RFC 9111 section 3.2).
func TestValidation304KeepsFieldsItOmits(t *testing.T) {
	clock := newTestClock()
	lastModified := "Wed, 01 Jan 2020 00:00:00 GMT"
	o := newOrigin(t, clock, respondWith(t, "body",
		"Cache-Control: max-age=2", "Last-Modified: "+lastModified, "Test-Header: value-A"))
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/keep")
	clock.Advance(3 * time.Second)

	o.set(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Last-Modified", lastModified)
		w.WriteHeader(http.StatusNotModified)
	})
	r := p.get(t, "/keep")
	wantCacheStatus(t, r, "fwd-status=304")
	if got := r.header.Get("Test-Header"); got != "value-A" {
		t.Errorf("Test-Header = %q, want the stored value-A", got)
	}
}

// TestValidationHeadUpdatesStoredGet sends HEAD for a stale stored GET
// response. The cache forwards the HEAD, and its 200 freshens the stored
// response and replaces its fields (RFC 9111 section 4.3.5), so the next
// GET is a hit that carries the new field value.
func TestValidationHeadUpdatesStoredGet(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, respondWith(t, "body", "Cache-Control: max-age=2", "Template-A: 1"))
	p := newTestProxy(t, clock, o, defaultPolicy())
	p.get(t, "/head")
	clock.Advance(3 * time.Second)

	var methods []string
	var mu sync.Mutex
	o.set(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		methods = append(methods, r.Method)
		mu.Unlock()
		w.Header().Set("Cache-Control", "max-age=1000")
		w.Header().Set("Template-A", "2")
		w.Header().Set("Content-Length", "4")
	})
	wantStatus(t, p.do(t, http.MethodHead, "/head"), 200)
	mu.Lock()
	if len(methods) != 1 || methods[0] != http.MethodHead {
		t.Errorf("origin saw methods %v, want [HEAD]", methods)
	}
	mu.Unlock()

	r := p.get(t, "/head")
	wantServedFromCache(t, o, 2, r)
	if got := r.header.Get("Template-A"); got != "2" {
		t.Errorf("Template-A = %q, want 2 from the HEAD response", got)
	}
	if r.body != "body" {
		t.Errorf("body = %q, want the stored body", r.body)
	}
}

// TestValidationRangeFromStoredResponse serves byte ranges of a stored
// complete response as 206 with the stored fields (RFC 9110 section 14.2,
// RFC 9111 section 3.4): a first-last range, an open-ended range and a
// suffix range.
func TestValidationRangeFromStoredResponse(t *testing.T) {
	for _, tc := range []struct {
		rangeSpec    string
		body         string
		contentRange string
	}{
		{"bytes=0-1", "01", "bytes 0-1/11"},
		{"bytes=1-", "123456789A", "bytes 1-10/11"},
		{"bytes=-1", "A", "bytes 10-10/11"},
	} {
		t.Run(tc.rangeSpec, func(t *testing.T) {
			clock := newTestClock()
			o := newOrigin(t, clock, respondWith(t, "0123456789A", "Cache-Control: max-age=3600", "A: 1"))
			p := newTestProxy(t, clock, o, defaultPolicy())
			p.get(t, "/range")

			r := p.get(t, "/range", "Range: "+tc.rangeSpec)
			wantStatus(t, r, http.StatusPartialContent)
			wantServedFromCache(t, o, 1, r)
			if r.body != tc.body {
				t.Errorf("body = %q, want %q", r.body, tc.body)
			}
			if got := r.header.Get("Content-Range"); got != tc.contentRange {
				t.Errorf("Content-Range = %q, want %q", got, tc.contentRange)
			}
			if got := r.header.Get("A"); got != "1" {
				t.Errorf("A = %q, want the stored 1", got)
			}
		})
	}
}

// TestValidationRangeMissForwarded checks that a Range request with
// nothing stored reaches the origin with its Range field, so the client
// gets the partial response it asked for.
func TestValidationRangeMissForwarded(t *testing.T) {
	clock := newTestClock()
	o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Header().Set("Content-Range", "bytes 4-9/10")
		w.WriteHeader(http.StatusPartialContent)
		fmt.Fprint(w, "01234")
	})
	p := newTestProxy(t, clock, o, defaultPolicy())

	r := p.get(t, "/partial", "Range: bytes=-5")
	wantStatus(t, r, http.StatusPartialContent)
	if r.body != "01234" {
		t.Errorf("body = %q, want 01234", r.body)
	}
	if got := o.lastHeader().Get("Range"); got != "bytes=-5" {
		t.Errorf("origin saw Range %q, want bytes=-5", got)
	}
}

// TestValidationAuthorizationReuse checks that a response to a request
// with Authorization is reused by a shared cache only when public,
// must-revalidate or s-maxage allows it (RFC 9111 section 3.5), and that
// the origin still receives the Authorization field.
func TestValidationAuthorizationReuse(t *testing.T) {
	for _, tc := range []struct {
		cacheControl string
		hit          bool
	}{
		{"max-age=100000", false},
		{"max-age=3600, public", true},
		{"max-age=3600, must-revalidate", true},
		{"s-maxage=3600", true},
	} {
		t.Run(tc.cacheControl, func(t *testing.T) {
			clock := newTestClock()
			o := newOrigin(t, clock, respondWith(t, "secret", "Cache-Control: "+tc.cacheControl))
			p := newTestProxy(t, clock, o, defaultPolicy())
			p.get(t, "/auth", "Authorization: FOO")
			if got := o.lastHeader().Get("Authorization"); got != "FOO" {
				t.Errorf("origin saw Authorization %q, want FOO", got)
			}

			r := p.get(t, "/auth")
			if tc.hit {
				wantServedFromCache(t, o, 1, r)
				return
			}
			wantForwarded(t, r)
			wantRequests(t, o, 2)
		})
	}
}

// TestValidationInterimResponses passes 102 and 103 responses to the
// client and stores only the final response (RFC 9111 section 3 excludes
// non-final responses). A hit sends no interim response, and the fields
// of a 103 appear in neither the final nor the stored response.
func TestValidationInterimResponses(t *testing.T) {
	for _, code := range []int{http.StatusProcessing, http.StatusEarlyHints} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			clock := newTestClock()
			o := newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Link", "</styles.css>; rel=preload; as=style")
				w.Header().Set("X-My-Header", "test")
				w.WriteHeader(code)
				w.Header().Del("Link")
				w.Header().Del("X-My-Header")
				w.Header().Set("Cache-Control", "max-age=100000")
				fmt.Fprint(w, "final")
			})
			p := newTestProxy(t, clock, o, defaultPolicy())

			first, interim := getWithInterim(t, p, "/interim")
			if len(interim) != 1 || interim[0].code != code {
				t.Fatalf("interim responses = %v, want one %d", interim, code)
			}
			if got := interim[0].header.Get("X-My-Header"); got != "test" {
				t.Errorf("interim X-My-Header = %q, want test", got)
			}
			wantCacheStatus(t, first, "stored")

			second, interim := getWithInterim(t, p, "/interim")
			if len(interim) != 0 {
				t.Errorf("hit sent interim responses %v, want none", interim)
			}
			wantServedFromCache(t, o, 1, second)
			for step, r := range map[string]result{"first": first, "stored": second} {
				wantStatus(t, r, 200)
				if r.body != "final" {
					t.Errorf("%s body = %q, want final", step, r.body)
				}
				if got := r.header.Get("X-My-Header"); got != "" {
					t.Errorf("%s response carries X-My-Header %q from the interim response", step, got)
				}
			}
		})
	}
}

type interimResponse struct {
	code   int
	header http.Header
}

// getWithInterim sends GET path to the proxy and records the informational
// responses that arrive before the final one.
func getWithInterim(t *testing.T, p *testProxy, path string) (result, []interimResponse) {
	t.Helper()
	var interim []interimResponse
	trace := &httptrace.ClientTrace{
		Got1xxResponse: func(code int, header textproto.MIMEHeader) error {
			interim = append(interim, interimResponse{code: code, header: http.Header(header).Clone()})
			return nil
		},
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), http.MethodGet, p.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := p.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body of GET %s: %v", path, err)
	}
	return result{status: resp.StatusCode, header: resp.Header, body: string(body)}, interim
}

// TestValidationStoresEndToEndFields checks that a stored response keeps
// its end-to-end fields, with either validator. Connection and the fields
// it names are left out (RFC 9111 section 3.1).
func TestValidationStoresEndToEndFields(t *testing.T) {
	endToEnd := []string{
		"Test-Header: t", "X-Test-Header: x", "Content-Type: text/plain", "X-Frame-Options: deny",
		"X-XSS-Protection: 1", "Clear-Site-Data: cookies", "Public-Key-Pins: pins",
		"Strict-Transport-Security: max-age=60", "Strict-Transport-Security2: s2",
		"WWW-Authenticate: Basic",
	}
	for _, validator := range []string{`ETag: "v1"`, "Last-Modified: Wed, 01 Jan 2020 00:00:00 GMT"} {
		t.Run(strings.SplitN(validator, ":", 2)[0], func(t *testing.T) {
			clock := newTestClock()
			fields := append([]string{"Cache-Control: max-age=3600", validator, "Connection: a, b", "A: 1", "B: 2", "C: 3"}, endToEnd...)
			o := newOrigin(t, clock, respondWith(t, "body", fields...))
			p := newTestProxy(t, clock, o, defaultPolicy())
			p.get(t, "/fields")

			r := p.get(t, "/fields")
			wantServedFromCache(t, o, 1, r)
			for _, f := range append([]string{"C: 3"}, endToEnd...) {
				name, value, _ := strings.Cut(f, ":")
				if got := r.header.Get(name); got != strings.TrimSpace(value) {
					t.Errorf("%s = %q, want %q", name, got, strings.TrimSpace(value))
				}
			}
			for _, name := range []string{"Connection", "A", "B"} {
				if got := r.header.Get(name); got != "" {
					t.Errorf("%s = %q, want it left out of the stored response", name, got)
				}
			}
		})
	}
}
