package cache

import (
	"cmp"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// reuseCase is one stored response and one later request for the same URI.
// The origin sends status and fields, the test clock moves by advance, and
// the second request (with request fields) must be served from the cache
// when reused is true and reach the origin otherwise.
type reuseCase struct {
	name string
	rfc  string // the section that sets the expectation
	path string // "/r" when empty
	// secondPath is the path of the second request, path when empty.
	secondPath string
	status     int      // 0 means 200
	fields     []string // response fields as "Name: value", one field line each
	advance    time.Duration
	request    []string // fields of the second request
	reused     bool

	// Checks on the second response.
	wantFields    []string // "Name: value" that must be present
	missingFields []string // names that must be absent
	// wantConditional is a request field ("If-None-Match: ...") that the
	// origin must receive on the second request. Its validator matches,
	// so the second response must carry the stored body.
	wantConditional string
}

// clockStart is the time every testClock starts at.
var clockStart = newTestClock().Now()

// clockDate formats the start of the test clock moved by secs seconds.
func clockDate(secs int) string {
	return clockStart.Add(time.Duration(secs) * time.Second).Format(http.TimeFormat)
}

// writeFields writes fields into h. The first line of a name replaces what
// h holds, so a case may override the Date the origin sets, and later lines
// of the same name add field lines.
func writeFields(t *testing.T, h http.Header, fields []string) {
	t.Helper()
	seen := map[string]bool{}
	for _, f := range fields {
		name, value, ok := strings.Cut(f, ":")
		if !ok {
			t.Fatalf("field %q has no colon", f)
		}
		if !seen[http.CanonicalHeaderKey(name)] {
			h.Del(name)
			seen[http.CanonicalHeaderKey(name)] = true
		}
		h.Add(name, strings.TrimSpace(value))
	}
}

// fieldOrigin responds to every request with status and fields, and with 304
// to a conditional request whose validator matches the ETag or
// Last-Modified among fields.
func fieldOrigin(t *testing.T, clock *testClock, status int, fields []string) *origin {
	t.Helper()
	if status == 0 {
		status = http.StatusOK
	}
	return newOrigin(t, clock, func(w http.ResponseWriter, r *http.Request) {
		writeFields(t, w.Header(), fields)
		etag, lastModified := w.Header().Get("ETag"), w.Header().Get("Last-Modified")
		inm, ims := r.Header.Get("If-None-Match"), r.Header.Get("If-Modified-Since")
		if (etag != "" && inm == etag) || (inm == "" && lastModified != "" && ims == lastModified) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.WriteHeader(status)
		if bodyAllowed(status) {
			fmt.Fprintf(w, "body %d", status)
		}
	})
}

// getManual sends GET path to the proxy without following redirects, so
// that stored 3xx responses reach the test.
func getManual(t *testing.T, p *testProxy, path string, fields ...string) result {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, p.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	writeFields(t, req.Header, fields)
	client := *p.srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body of GET %s: %v", path, err)
	}
	return result{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

func runReuseCases(t *testing.T, cases []reuseCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clock := newTestClock()
			o := fieldOrigin(t, clock, tc.status, tc.fields)
			p := newTestProxy(t, clock, o, defaultPolicy())

			path, secondPath := cmp.Or(tc.path, "/r"), cmp.Or(tc.secondPath, tc.path, "/r")
			first := getManual(t, p, path)
			p.waitHandlers()
			clock.Advance(tc.advance)
			second := getManual(t, p, secondPath, tc.request...)
			p.waitHandlers()

			want := int64(2)
			if tc.reused {
				want = 1
			}
			if got := o.requests.Load(); got != want {
				t.Fatalf("origin saw %d requests, want %d (%s; Cache-Status %q then %q)",
					got, want, tc.rfc, first.header.Get("Cache-Status"), second.header.Get("Cache-Status"))
			}
			if tc.reused {
				if second.status != first.status {
					t.Errorf("reused status = %d, want the stored %d", second.status, first.status)
				}
				if second.body != first.body {
					t.Errorf("reused body = %q, want the stored %q", second.body, first.body)
				}
				wantCacheStatus(t, second, "hit")
			}
			for _, f := range tc.wantFields {
				name, value, _ := strings.Cut(f, ":")
				if got := second.header.Values(name); len(got) != 1 || got[0] != strings.TrimSpace(value) {
					t.Errorf("%s = %q, want %q (%s)", name, got, strings.TrimSpace(value), tc.rfc)
				}
			}
			for _, name := range tc.missingFields {
				if got := second.header.Values(name); len(got) > 0 {
					t.Errorf("%s = %q, want it absent (%s)", name, got, tc.rfc)
				}
			}
			if tc.wantConditional != "" {
				name, value, _ := strings.Cut(tc.wantConditional, ":")
				if got := o.lastHeader().Get(name); got != strings.TrimSpace(value) {
					t.Errorf("origin received %s %q, want %q (%s)", name, got, strings.TrimSpace(value), tc.rfc)
				}
				if second.body != first.body {
					t.Errorf("validated body = %q, want the stored %q", second.body, first.body)
				}
			}
		})
	}
}

// reusePause is how long a case waits before reusing a response, long
// enough for a max-age of 1 or 2 seconds to expire.
const reusePause = 3 * time.Second

func TestConformanceMaxAge(t *testing.T) {
	const s5221 = "RFC 9111 section 5.2.2.1"
	runReuseCases(t, []reuseCase{
		{name: "no freshness or validator", rfc: "RFC 9111 section 4.2.2", advance: reusePause},
		{name: "positive max-age", rfc: s5221, fields: []string{"Cache-Control: max-age=3600"}, advance: reusePause, reused: true},
		{name: "max-age expired", rfc: s5221, fields: []string{"Cache-Control: max-age=2"}, advance: reusePause},
		{name: "max-age zero", rfc: s5221, fields: []string{"Cache-Control: max-age=0"}, advance: reusePause},
		{name: "max-age 2^31-1", rfc: "RFC 9111 section 1.2.2", fields: []string{"Cache-Control: max-age=2147483647"}, advance: reusePause, reused: true},
		{name: "max-age 2^31", rfc: "RFC 9111 section 1.2.2", fields: []string{"Cache-Control: max-age=2147483648"}, advance: reusePause, reused: true},
		{name: "max-age 2^31+1", rfc: "RFC 9111 section 1.2.2", fields: []string{"Cache-Control: max-age=2147483649"}, advance: reusePause, reused: true},
		{name: "max-age beyond 2^31", rfc: "RFC 9111 section 1.2.2", fields: []string{"Cache-Control: max-age=99999999999"}, advance: reusePause, reused: true},
		{name: "Age above max-age", rfc: "RFC 9111 section 4.2.3", fields: []string{"Date: " + clockDate(0), "Cache-Control: max-age=3600", "Age: 7200"}, advance: reusePause},
		{name: "old Date counts as age", rfc: "RFC 9111 section 4.2.3", fields: []string{"Date: " + clockDate(-7200), "Cache-Control: max-age=3600"}, advance: reusePause},
		{name: "max-age over past Expires", rfc: "RFC 9111 section 5.3", fields: []string{"Cache-Control: max-age=3600", "Expires: " + clockDate(-7200), "Date: " + clockDate(0)}, advance: reusePause, reused: true},
		{name: "max-age over invalid Expires", rfc: "RFC 9111 section 5.3", fields: []string{"Cache-Control: max-age=3600", "Expires: 0", "Date: " + clockDate(0)}, advance: reusePause, reused: true},
		{name: "max-age zero over future Expires", rfc: "RFC 9111 section 5.3", fields: []string{"Expires: " + clockDate(3600), "Cache-Control: max-age=0", "Date: " + clockDate(0)}, advance: reusePause},
		{name: "unknown directive ignored", rfc: "RFC 9111 section 5.2.3", fields: []string{"Cache-Control: foobar, max-age=3600"}, advance: reusePause, reused: true},
		{name: "directive name any case", rfc: "RFC 9111 section 5.2", fields: []string{"Cache-Control: MaX-aGe=3600"}, advance: reusePause, reused: true},
		{name: "negative max-age", rfc: "RFC 9111 section 1.2.2", fields: []string{"Cache-Control: max-age=-3600"}, advance: reusePause},
	})
}

func TestConformanceSharedMaxAge(t *testing.T) {
	const s52210 = "RFC 9111 section 5.2.2.10"
	runReuseCases(t, []reuseCase{
		{name: "positive s-maxage", rfc: s52210, fields: []string{"Cache-Control: s-maxage=3600"}, advance: reusePause, reused: true},
		{name: "short s-maxage over max-age", rfc: s52210, fields: []string{"Cache-Control: max-age=3600, s-maxage=1"}, advance: reusePause},
		{name: "short s-maxage first", rfc: s52210, fields: []string{"Cache-Control: s-maxage=1, max-age=3600"}, advance: reusePause},
		{name: "short s-maxage on own line", rfc: s52210, fields: []string{"Cache-Control: max-age=3600", "Cache-Control: s-maxage=1"}, advance: reusePause},
		{name: "long s-maxage over max-age", rfc: s52210, fields: []string{"Cache-Control: max-age=1, s-maxage=3600"}, advance: reusePause, reused: true},
		{name: "long s-maxage over past Expires", rfc: s52210, fields: []string{"Expires: " + clockDate(-10), "Cache-Control: max-age=0, s-maxage=3600"}, advance: reusePause, reused: true},
	})
}

func TestConformanceCacheControlParsing(t *testing.T) {
	const s421 = "RFC 9111 section 4.2.1"
	runReuseCases(t, []reuseCase{
		// Section 4.2.1 lets a cache use the first of duplicate
		// directives, and this cache does.
		{name: "first max-age fresh", rfc: s421, fields: []string{"Cache-Control: max-age=1800, max-age=1"}, advance: reusePause, reused: true},
		{name: "first max-age fresh on own line", rfc: s421, fields: []string{"Cache-Control: max-age=1800", "Cache-Control: max-age=1"}, advance: reusePause, reused: true},
		{name: "first max-age stale", rfc: s421, fields: []string{"Cache-Control: max-age=1, max-age=1800"}, advance: reusePause},
		{name: "first max-age stale on own line", rfc: s421, fields: []string{"Cache-Control: max-age=1", "Cache-Control: max-age=1800"}, advance: reusePause},
		{name: "max-age inside quoted string before", rfc: "RFC 9111 section 5.2", fields: []string{`Cache-Control: extension="max-age=3600", max-age=1`}, advance: reusePause},
		{name: "max-age inside quoted string after", rfc: "RFC 9111 section 5.2", fields: []string{`Cache-Control: max-age=1, extension="max-age=3600"`}, advance: reusePause},
		{name: "quoted max-age", rfc: "RFC 9111 section 5.2", fields: []string{`Cache-Control: max-age="3600"`}, advance: reusePause, reused: true},
		{name: "leading zeros", rfc: "RFC 9111 section 1.2.2", fields: []string{"Cache-Control: max-age=003600"}, advance: reusePause, reused: true},
		// Invalid freshness makes the response stale (section 4.2.1).
		{name: "single-quoted max-age", rfc: s421, fields: []string{"Cache-Control: max-age='3600'"}, advance: reusePause},
		{name: "decimal max-age", rfc: s421, fields: []string{"Cache-Control: max-age=3600.0"}, advance: reusePause},
		{name: "fractional max-age", rfc: s421, fields: []string{"Cache-Control: max-age=3600.5"}, advance: reusePause},
		{name: "leading alpha", rfc: s421, fields: []string{"Cache-Control: max-age=a3600"}, advance: reusePause},
		{name: "trailing alpha", rfc: s421, fields: []string{"Cache-Control: max-age=3600a"}, advance: reusePause},
	})
}

func TestConformanceAgeParsing(t *testing.T) {
	// RFC 9111 section 5.1: use the first member of a list-based Age, and
	// ignore an Age that is not a non-negative integer.
	const s51 = "RFC 9111 section 5.1"
	aged := func(name string, reused bool, ages ...string) reuseCase {
		fields := []string{"Date: " + clockDate(0), "Cache-Control: max-age=3600"}
		for _, a := range ages {
			fields = append(fields, "Age: "+a)
		}
		return reuseCase{name: name, rfc: s51, fields: fields, advance: reusePause, reused: reused}
	}
	runReuseCases(t, []reuseCase{
		aged("non-numeric ignored", true, "abc"),
		aged("negative ignored", true, "-7200"),
		aged("float ignored", true, "7200.0"),
		aged("first member old", false, "7200,0"),
		aged("first line old", false, "7200", "0"),
		aged("first member zero", true, "0,7200"),
		aged("first line zero", true, "0", "7200"),
		aged("duplicate zero", true, "0, 0"),
		aged("duplicate zero lines", true, "0", "0"),
		aged("duplicate old", false, "7200, 7200"),
		aged("duplicate old lines", false, "7200", "7200"),
	})
}

func TestConformanceExpires(t *testing.T) {
	const s53 = "RFC 9111 section 5.3"
	const s421 = "RFC 9111 section 4.2.1"
	runReuseCases(t, []reuseCase{
		{name: "future Expires", rfc: s53, fields: []string{"Expires: " + clockDate(30*24*3600), "Date: " + clockDate(0)}, advance: reusePause, reused: true},
		{name: "past Expires", rfc: s421, fields: []string{"Expires: " + clockDate(-30*24*3600), "Date: " + clockDate(0)}, advance: reusePause},
		{name: "Expires equal to Date", rfc: s421, fields: []string{"Expires: " + clockDate(0), "Date: " + clockDate(0)}},
		{name: "Expires before a future Date", rfc: s421, fields: []string{"Expires: " + clockDate(300), "Date: " + clockDate(400)}, advance: reusePause},
		{name: "invalid Expires zero", rfc: s53, fields: []string{"Expires: 0", "Date: " + clockDate(0)}, advance: reusePause},
		{name: "Expires with invalid Date", rfc: "RFC 9110 section 6.6.1", fields: []string{"Date: foo", "Expires: " + clockDate(10)}, reused: true},
		{name: "Age beyond Expires with slow Date", rfc: "RFC 9111 section 4.2.3", fields: []string{"Date: " + clockDate(-10), "Expires: " + clockDate(10), "Age: 25"}},
		{name: "Age beyond Expires with fast Date", rfc: "RFC 9111 section 4.2.3", fields: []string{"Date: " + clockDate(10), "Expires: " + clockDate(20), "Age: 15"}},
		// HTTP-date names are case-sensitive, but RFC 9110 section 5.6.7
		// encourages recipients to parse timestamps robustly.
		{name: "weekday in upper case", rfc: "RFC 9110 section 5.6.7", fields: []string{"Expires: THU, 18 Aug 2050 02:01:18 GMT", "Date: " + clockDate(0)}, advance: reusePause, reused: true},
		{name: "month in upper case", rfc: "RFC 9110 section 5.6.7", fields: []string{"Expires: Thu, 18 AUG 2050 02:01:18 GMT", "Date: " + clockDate(0)}, advance: reusePause, reused: true},
		{name: "UTC zone", rfc: s53, fields: []string{"Expires: Thu, 18 Aug 2050 02:01:18 UTC", "Date: " + clockDate(0)}, advance: reusePause},
		{name: "two-digit year", rfc: s53, fields: []string{"Expires: Thu, 18 Aug 50 02:01:18 GMT", "Date: " + clockDate(0)}, advance: reusePause},
		{name: "missing comma", rfc: s53, fields: []string{"Expires: Thu 18 Aug 2050 02:01:18 GMT", "Date: " + clockDate(0)}, advance: reusePause},
		{name: "date with dashes", rfc: s53, fields: []string{"Expires: Thu, 18-Aug-2050 02:01:18 GMT", "Date: " + clockDate(0)}, advance: reusePause},
		{name: "time with periods", rfc: s53, fields: []string{"Expires: Thu, 18 Aug 2050 02.01.18 GMT", "Date: " + clockDate(0)}, advance: reusePause},
	})
}

func TestConformanceHeuristicFreshness(t *testing.T) {
	// RFC 9111 section 4.2.2: only a status that is heuristically cacheable
	// by default (RFC 9110 section 15.1), or a response marked public, may
	// get a heuristic lifetime.
	var cases []reuseCase
	for _, tc := range []struct {
		status int
		public bool
		reused bool
	}{
		{200, false, true}, {201, false, false}, {202, false, false}, {203, false, true},
		{204, false, true}, {403, false, false}, {404, false, true}, {405, false, true},
		{410, false, true}, {414, false, true}, {501, false, true}, {502, false, false},
		{503, false, false}, {504, false, false}, {599, false, false}, {599, true, true},
	} {
		fields := []string{"Last-Modified: " + clockDate(-24*3600), "Date: " + clockDate(0)}
		name := strconv.Itoa(tc.status)
		if tc.public {
			fields = append(fields, "Cache-Control: public")
			name += " public"
		}
		cases = append(cases, reuseCase{name: name, rfc: "RFC 9111 section 4.2.2", status: tc.status, fields: fields, reused: tc.reused})
	}
	for _, secs := range []int{5, 60, 3600, 24 * 3600} {
		cases = append(cases, reuseCase{
			name:   fmt.Sprintf("modified %ds ago", secs),
			rfc:    "RFC 9111 section 4.2.2",
			fields: []string{"Last-Modified: " + clockDate(-secs), "Date: " + clockDate(0)},
			reused: true,
		})
	}
	cases = append(cases,
		reuseCase{name: "attachment", rfc: "RFC 9111 section 4.2.2", fields: []string{"Last-Modified: " + clockDate(-100000), "Date: " + clockDate(0), "Content-Disposition: attachment; filename=example.txt"}, reused: true},
		reuseCase{name: "past tenth of age", rfc: "RFC 9111 section 4.2.2", fields: []string{"Last-Modified: " + clockDate(-100), "Date: " + clockDate(0)}, advance: 11 * time.Second},
	)
	runReuseCases(t, cases)
}

// explicitFreshnessStatuses are final status codes that RFC 9111 section 3
// allows a cache to store with explicit freshness, whether or not they are
// cacheable by default.
var explicitFreshnessStatuses = []int{200, 203, 204, 299, 301, 302, 303, 307, 308, 400, 404, 410, 499, 500, 502, 503, 504, 599}

func TestConformanceStatusExplicitFreshness(t *testing.T) {
	var cases []reuseCase
	for _, status := range explicitFreshnessStatuses {
		cases = append(cases,
			reuseCase{
				name:   fmt.Sprintf("%d fresh", status),
				rfc:    "RFC 9111 section 3",
				status: status,
				fields: []string{"Expires: " + clockDate(100000), "Cache-Control: max-age=100000", "Last-Modified: " + clockDate(0), "Date: " + clockDate(0)},
				reused: true,
			},
			reuseCase{
				name:   fmt.Sprintf("%d stale", status),
				rfc:    "RFC 9111 section 4.2.1",
				status: status,
				fields: []string{"Expires: " + clockDate(-5000), "Last-Modified: " + clockDate(-100000), "Date: " + clockDate(0)},
			})
	}
	// RFC 9111 section 5.2.2.3: must-understand overrides no-store only for
	// a status whose caching rules the cache implements.
	cases = append(cases,
		reuseCase{name: "599 must-understand", rfc: "RFC 9111 section 5.2.2.3", status: 599, fields: []string{"Cache-Control: max-age=3600, no-store, must-understand"}},
		reuseCase{name: "200 must-understand", rfc: "RFC 9111 section 5.2.2.3", fields: []string{"Cache-Control: max-age=3600, no-store, must-understand"}, reused: true},
	)
	runReuseCases(t, cases)
}

func TestConformanceRequestDirectives(t *testing.T) {
	fresh := []string{"Expires: " + clockDate(100000), "Cache-Control: max-age=100000", "Last-Modified: " + clockDate(0), "Date: " + clockDate(0)}
	runReuseCases(t, []reuseCase{
		{name: "max-age zero", rfc: "RFC 9111 section 5.2.1.1", fields: fresh, advance: reusePause, request: []string{"Cache-Control: max-age=0"}},
		{name: "max-age below age", rfc: "RFC 9111 section 5.2.1.1", fields: fresh, advance: reusePause, request: []string{"Cache-Control: max-age=1"}},
		{name: "max-age below upstream Age", rfc: "RFC 9111 section 5.2.1.1", fields: []string{"Cache-Control: max-age=3600", "Age: 1800"}, request: []string{"Cache-Control: max-age=600"}},
		{name: "max-stale covers staleness", rfc: "RFC 9111 section 5.2.1.2", fields: []string{"Cache-Control: max-age=1"}, advance: reusePause, request: []string{"Cache-Control: max-stale=1000"}, reused: true},
		{name: "max-stale covers upstream Age", rfc: "RFC 9111 section 5.2.1.2", fields: []string{"Cache-Control: max-age=1500", "Age: 2000"}, request: []string{"Cache-Control: max-stale=1000"}, reused: true},
		{name: "min-fresh above lifetime", rfc: "RFC 9111 section 5.2.1.3", fields: []string{"Cache-Control: max-age=1500"}, request: []string{"Cache-Control: min-fresh=2000"}},
		{name: "min-fresh above remaining", rfc: "RFC 9111 section 5.2.1.3", fields: []string{"Cache-Control: max-age=1500", "Age: 1000"}, request: []string{"Cache-Control: min-fresh=1000"}},
		{name: "no-cache", rfc: "RFC 9111 section 5.2.1.4", fields: []string{"Cache-Control: max-age=3600"}, request: []string{"Cache-Control: no-cache"}},
		{
			name: "no-cache validates Last-Modified", rfc: "RFC 9111 section 5.2.1.4",
			fields:          []string{"Cache-Control: max-age=3600", "Last-Modified: " + clockDate(-10000), "Date: " + clockDate(0)},
			request:         []string{"Cache-Control: no-cache"},
			wantConditional: "If-Modified-Since: " + clockDate(-10000),
		},
		{
			name: "no-cache validates ETag", rfc: "RFC 9111 section 5.2.1.4",
			fields:          []string{"Cache-Control: max-age=3600", `ETag: "abc"`},
			request:         []string{"Cache-Control: no-cache"},
			wantConditional: `If-None-Match: "abc"`,
		},
		{name: "no-store", rfc: "RFC 9111 section 5.2.1.5", fields: []string{"Cache-Control: max-age=3600"}, request: []string{"Cache-Control: no-store"}},
		// RFC 9111 section 5.4 deprecates Pragma. This cache still reads a
		// request's "Pragma: no-cache" without Cache-Control as no-cache,
		// the more careful choice.
		{name: "Pragma no-cache", rfc: "RFC 9111 section 5.4", fields: []string{"Cache-Control: max-age=3600"}, request: []string{"Pragma: no-cache"}},
		{name: "Pragma extension", rfc: "RFC 9111 section 5.4", fields: []string{"Cache-Control: max-age=3600"}, request: []string{"Pragma: unrecognised-extension"}, reused: true},
		{name: "response Pragma no-cache", rfc: "RFC 9111 section 5.4", fields: []string{"Cache-Control: max-age=3600", "Pragma: no-cache"}, reused: true},
		// Go's HTTP/1 client (net/http fixPragmaCacheControl, Go 1.26),
		// which this test's proxy uses, turns a response's "Pragma:
		// no-cache" without Cache-Control into "Cache-Control: no-cache"
		// before the cache receives it, so the response is revalidated on
		// each use. The L7's direct backend connections undo that
		// (TestPragmaNoCacheLeftAlone); upstreams reached through the
		// transport still get it.
		{name: "response Pragma with heuristic", rfc: "RFC 9111 section 5.4", fields: []string{"Last-Modified: " + clockDate(-10000), "Pragma: no-cache"}, wantConditional: "If-Modified-Since: " + clockDate(-10000)},
		{name: "response Pragma extension", rfc: "RFC 9111 section 5.4", fields: []string{"Cache-Control: max-age=3600", "Pragma: unrecognised-extension"}, reused: true},
	})
}

func TestConformanceOnlyIfCachedMiss(t *testing.T) {
	clock := newTestClock()
	o := fieldOrigin(t, clock, 0, []string{"Cache-Control: max-age=3600"})
	p := newTestProxy(t, clock, o, defaultPolicy())

	r := getManual(t, p, "/r", "Cache-Control: only-if-cached")
	wantStatus(t, r, http.StatusGatewayTimeout)
	wantRequests(t, o, 0)
}
