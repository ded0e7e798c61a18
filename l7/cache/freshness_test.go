package cache

import (
	"net/http"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func httpDate(t time.Time) string { return t.Format(http.TimeFormat) }

func header(fields ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(fields); i += 2 {
		h.Add(fields[i], fields[i+1])
	}
	return h
}

// TestFreshnessLifetime covers RFC 9111 section 4.2.1 (explicit
// freshness, in order s-maxage, max-age, Expires) and section 4.2.2
// (heuristic freshness).
func TestFreshnessLifetime(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		h         http.Header
		heuristic bool
		want      time.Duration
		wantHeur  bool
	}{
		{"4.2.1 s-maxage wins over max-age", 200, header("Cache-Control", "max-age=10, s-maxage=20"), true, 20 * time.Second, false},
		{"4.2.1 max-age wins over Expires", 200, header("Cache-Control", "max-age=10", "Expires", httpDate(t0.Add(time.Hour))), true, 10 * time.Second, false},
		{"4.2.1 Expires minus Date", 200, header("Date", httpDate(t0), "Expires", httpDate(t0.Add(90*time.Second))), true, 90 * time.Second, false},
		{"4.2.1 Expires before Date is zero", 200, header("Date", httpDate(t0), "Expires", httpDate(t0.Add(-time.Hour))), true, 0, false},
		{"5.3 invalid Expires means already stale", 200, header("Date", httpDate(t0), "Expires", "0"), true, 0, false},
		{"5.3 invalid Expires beats heuristic", 200, header("Expires", "never", "Last-Modified", httpDate(t0.Add(-time.Hour))), true, 0, false},
		{"4.2.1 first Expires of several", 200, header("Date", httpDate(t0), "Expires", httpDate(t0.Add(time.Minute)), "Expires", httpDate(t0.Add(time.Hour))), true, time.Minute, false},
		{"1.2.2 invalid max-age means stale", 200, header("Cache-Control", "max-age=ten"), true, 0, false},
		{"1.2.2 negative max-age means stale", 200, header("Cache-Control", "max-age=-1"), true, 0, false},
		{"1.2.2 invalid s-maxage does not fall back to max-age", 200, header("Cache-Control", "s-maxage=x, max-age=60"), true, 0, false},
		{"5.2 quoted max-age accepted", 200, header("Cache-Control", `max-age="30"`), true, 30 * time.Second, false},
		{"1.2.2 huge max-age clamps to 2^31", 200, header("Cache-Control", "max-age=99999999999999999999"), true, maxDelta * time.Second, false},
		{"4.2.1 first max-age of several", 200, header("Cache-Control", "max-age=5", "Cache-Control", "max-age=500"), true, 5 * time.Second, false},
		{"4.2.2 heuristic is a tenth since Last-Modified", 200, header("Date", httpDate(t0), "Last-Modified", httpDate(t0.Add(-10*time.Hour))), true, time.Hour, true},
		{"4.2.2 heuristic capped at a day", 200, header("Date", httpDate(t0), "Last-Modified", httpDate(t0.Add(-1000*time.Hour))), true, 24 * time.Hour, true},
		{"4.2.2 heuristic off by policy", 200, header("Date", httpDate(t0), "Last-Modified", httpDate(t0.Add(-10*time.Hour))), false, 0, false},
		{"4.2.2 no heuristic without Last-Modified", 200, header("Date", httpDate(t0)), true, 0, false},
		{"4.2.2 no heuristic for 302", 302, header("Date", httpDate(t0), "Last-Modified", httpDate(t0.Add(-10*time.Hour))), true, 0, false},
		{"4.2.2 public allows heuristic for 302", 302, header("Cache-Control", "public", "Date", httpDate(t0), "Last-Modified", httpDate(t0.Add(-10*time.Hour))), true, time.Hour, true},
		{"4.2.2 Last-Modified in the future", 200, header("Date", httpDate(t0), "Last-Modified", httpDate(t0.Add(time.Hour))), true, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tm := newTiming(tc.h, t0, t0)
			got, heur := freshnessLifetime(tc.status, tc.h, parseCacheControl(tc.h), tm, tc.heuristic)
			if got != tc.want || heur != tc.wantHeur {
				t.Errorf("freshnessLifetime(%d, %v) = %v, %v; want %v, %v", tc.status, tc.h, got, heur, tc.want, tc.wantHeur)
			}
		})
	}
}

// TestCurrentAge covers the age calculation of RFC 9111 section 4.2.3.
func TestCurrentAge(t *testing.T) {
	tests := []struct {
		name         string
		date         time.Time // zero means no Date field
		age          string
		requestTime  time.Time
		responseTime time.Time
		now          time.Time
		want         time.Duration
	}{
		{"4.2.3 fresh from origin", t0, "", t0, t0, t0, 0},
		{"4.2.3 resident time adds", t0, "", t0, t0, t0.Add(42 * time.Second), 42 * time.Second},
		{"4.2.3 Age plus response delay", t0, "100", t0, t0.Add(2 * time.Second), t0.Add(2 * time.Second), 102 * time.Second},
		{"4.2.3 apparent age from an old Date", t0.Add(-300 * time.Second), "10", t0, t0, t0, 300 * time.Second},
		{"4.2.3 Date in the future gives no negative age", t0.Add(time.Hour), "", t0, t0, t0, 0},
		{"4.2.3 missing Date uses response time", time.Time{}, "", t0, t0, t0.Add(5 * time.Second), 5 * time.Second},
		{"5.1 invalid Age ignored", t0, "-5", t0, t0, t0, 0},
		{"5.1 Age list uses the first member", t0, "20, 7200", t0, t0, t0, 20 * time.Second},
		{"1.2.2 huge Age clamps to 2^31", t0, "99999999999999", t0, t0, t0, maxDelta * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if !tc.date.IsZero() {
				h.Set("Date", httpDate(tc.date))
			}
			if tc.age != "" {
				h.Set("Age", tc.age)
			}
			tm := newTiming(h, tc.requestTime, tc.responseTime)
			if got := tm.currentAge(tc.now); got != tc.want {
				t.Errorf("currentAge(Date %v, Age %q) = %v, want %v", tc.date, tc.age, got, tc.want)
			}
		})
	}
}

// TestEvaluate covers reuse decisions: RFC 9111 sections 4.2 and 4.2.4,
// the request directives of section 5.2.1, the response directives of
// section 5.2.2 that forbid stale use, and RFC 5861.
func TestEvaluate(t *testing.T) {
	tests := []struct {
		name     string
		response string // Cache-Control of the stored response
		request  string // Cache-Control of the request
		age      time.Duration
		strict   bool
		want     verdict
	}{
		{"4.2 fresh", "max-age=100", "", 50 * time.Second, true, verdictFresh},
		{"4.2 stale at exactly the lifetime", "max-age=100", "", 100 * time.Second, true, verdictValidate},
		{"5.2.1.4 request no-cache", "max-age=100", "no-cache", 0, true, verdictValidate},
		{"5.2.2.4 response no-cache when strict", "no-cache, max-age=100", "", 0, true, verdictValidate},
		{"5.2.2.4 response no-cache ignored when not strict", "no-cache, max-age=100", "", 0, false, verdictFresh},
		{"5.2.1.1 request max-age above age", "max-age=100", "max-age=60", 50 * time.Second, true, verdictFresh},
		{"5.2.1.1 request max-age below age", "max-age=100", "max-age=40", 50 * time.Second, true, verdictValidate},
		{"5.2.1.1 request max-age=0", "max-age=100", "max-age=0", time.Second, true, verdictValidate},
		{"5.2.1.1 invalid request max-age counts as 0", "max-age=100", "max-age=x", time.Second, true, verdictValidate},
		{"5.2.1.3 min-fresh met", "max-age=100", "min-fresh=40", 50 * time.Second, true, verdictFresh},
		{"5.2.1.3 min-fresh unmet", "max-age=100", "min-fresh=60", 50 * time.Second, true, verdictValidate},
		{"5.2.1.2 max-stale without value", "max-age=100", "max-stale", time.Hour, true, verdictMaxStale},
		{"5.2.1.2 max-stale within", "max-age=100", "max-stale=30", 120 * time.Second, true, verdictMaxStale},
		{"5.2.1.2 max-stale exceeded", "max-age=100", "max-stale=10", 120 * time.Second, true, verdictValidate},
		{"5.2.2.2 must-revalidate forbids max-stale", "max-age=100, must-revalidate", "max-stale", 120 * time.Second, true, verdictValidate},
		{"5.2.2.8 proxy-revalidate forbids max-stale", "max-age=100, proxy-revalidate", "max-stale", 120 * time.Second, true, verdictValidate},
		{"5.2.2.10 s-maxage forbids max-stale", "s-maxage=100", "max-stale", 120 * time.Second, true, verdictValidate},
		{"RFC 5861 stale-while-revalidate within", "max-age=100, stale-while-revalidate=30", "", 120 * time.Second, true, verdictStaleWhileRevalidate},
		{"RFC 5861 stale-while-revalidate exceeded", "max-age=100, stale-while-revalidate=30", "", 140 * time.Second, true, verdictValidate},
		{"RFC 5861 must-revalidate forbids stale-while-revalidate", "max-age=100, stale-while-revalidate=30, must-revalidate", "", 110 * time.Second, true, verdictValidate},
		{"RFC 5861 request no-cache forbids stale-while-revalidate", "max-age=100, stale-while-revalidate=30", "no-cache", 110 * time.Second, true, verdictValidate},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := header("Date", httpDate(t0), "Cache-Control", tc.response)
			e := newEntry(requestKey{primary: "GET http://x/"}, httptestRequest("GET"), 200, h, nil, newTiming(h, t0, t0), testStorePolicy)
			got := evaluate(e, parseCacheControl(header("Cache-Control", tc.request)), t0.Add(tc.age), tc.strict)
			if got.verdict != tc.want {
				t.Errorf("evaluate(response %q, request %q, age %v) = %v, want %v", tc.response, tc.request, tc.age, got.verdict, tc.want)
			}
		})
	}
}

// TestStaleIfErrorAllowed covers RFC 5861 section 4 and the directives of
// RFC 9111 section 4.2.4 that forbid serving stale.
func TestStaleIfErrorAllowed(t *testing.T) {
	tests := []struct {
		name     string
		response string
		request  string
		age      time.Duration
		want     bool
	}{
		{"response directive within", "max-age=10, stale-if-error=60", "", 30 * time.Second, true},
		{"response directive exceeded", "max-age=10, stale-if-error=60", "", 80 * time.Second, false},
		{"request directive within", "max-age=10", "stale-if-error=60", 30 * time.Second, true},
		{"no directive", "max-age=10", "", 30 * time.Second, false},
		{"must-revalidate forbids", "max-age=10, stale-if-error=60, must-revalidate", "", 30 * time.Second, false},
		{"s-maxage forbids", "s-maxage=10, stale-if-error=60", "", 30 * time.Second, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := header("Date", httpDate(t0), "Cache-Control", tc.response)
			e := newEntry(requestKey{primary: "GET http://x/"}, httptestRequest("GET"), 200, h, nil, newTiming(h, t0, t0), testStorePolicy)
			got := staleIfErrorAllowed(e, parseCacheControl(header("Cache-Control", tc.request)), t0.Add(tc.age), true)
			if got != tc.want {
				t.Errorf("staleIfErrorAllowed(response %q, request %q, age %v) = %v, want %v", tc.response, tc.request, tc.age, got, tc.want)
			}
		})
	}
}

func httptestRequest(method string, fields ...string) *http.Request {
	r, _ := http.NewRequest(method, "http://example.com/", nil)
	for i := 0; i+1 < len(fields); i += 2 {
		r.Header.Add(fields[i], fields[i+1])
	}
	return r
}
