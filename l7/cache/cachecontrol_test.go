package cache

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestParseCacheControl(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		check func(d directives) bool
	}{
		{"tokens and arguments", []string{"public, max-age=60, s-maxage=30"}, func(d directives) bool {
			return d.public && d.maxAge.valid && d.maxAge.secs == 60 && d.sMaxAge.secs == 30
		}},
		{"case-insensitive names", []string{"Max-Age=5, NO-STORE"}, func(d directives) bool {
			return d.maxAge.secs == 5 && d.noStore
		}},
		{"whitespace around members", []string{" \tmax-age = 7 ,  no-cache "}, func(d directives) bool {
			return d.maxAge.secs == 7 && d.noCache
		}},
		{"several field lines", []string{"max-age=1", "must-revalidate"}, func(d directives) bool {
			return d.maxAge.secs == 1 && d.mustRevalidate
		}},
		{"quoted argument with comma", []string{`private="Set-Cookie, X-User", max-age=9`}, func(d directives) bool {
			return d.private && reflect.DeepEqual(d.privateFields, []string{"Set-Cookie", "X-User"}) && d.maxAge.secs == 9
		}},
		{"escaped quote inside quoted argument", []string{`ext="a\"b,c", max-age=3`}, func(d directives) bool {
			return d.maxAge.secs == 3
		}},
		{"unterminated quote drops the rest", []string{`max-age=4, ext="abc`}, func(d directives) bool {
			return d.maxAge.secs == 4
		}},
		{"first duplicate wins", []string{"max-age=10, max-age=20"}, func(d directives) bool {
			return d.maxAge.secs == 10
		}},
		{"invalid delta is present but invalid", []string{"max-age=abc"}, func(d directives) bool {
			return d.maxAge.present && !d.maxAge.valid
		}},
		{"max-age without argument is invalid", []string{"max-age"}, func(d directives) bool {
			return d.maxAge.present && !d.maxAge.valid
		}},
		{"max-stale without argument", []string{"max-stale"}, func(d directives) bool {
			return d.maxStale.present && d.maxStaleAny
		}},
		{"max-stale with argument", []string{"max-stale=30"}, func(d directives) bool {
			return d.maxStale.valid && d.maxStale.secs == 30 && !d.maxStaleAny
		}},
		{"junk member skipped", []string{"max-age=5 junk, no-store"}, func(d directives) bool {
			return !d.maxAge.present && d.noStore
		}},
		{"empty members", []string{",,, ,no-store,,"}, func(d directives) bool {
			return d.noStore
		}},
		{"unknown extension ignored", []string{"community=\"UCI\", immutable"}, func(d directives) bool {
			return d.immutable
		}},
		{"request directives", []string{"only-if-cached, min-fresh=5, stale-if-error=9"}, func(d directives) bool {
			return d.onlyIfCached && d.minFresh.secs == 5 && d.staleIfError.secs == 9
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for _, l := range tc.lines {
				h.Add("Cache-Control", l)
			}
			d := parseCacheControl(h)
			if !tc.check(d) {
				t.Errorf("parseCacheControl(%q) = %+v", tc.lines, d)
			}
		})
	}
}

func TestParseDeltaSeconds(t *testing.T) {
	tests := []struct {
		in    string
		want  int64
		valid bool
	}{
		{"0", 0, true},
		{"60", 60, true},
		{"2147483648", maxDelta, true},
		{"2147483649", maxDelta, true},
		{"999999999999999999999999", maxDelta, true},
		{"", 0, false},
		{"-1", 0, false},
		{"1.5", 0, false},
		{" 5", 0, false},
		{"5s", 0, false},
	}
	for _, tc := range tests {
		got, ok := parseDeltaSeconds(tc.in)
		if got != tc.want || ok != tc.valid {
			t.Errorf("parseDeltaSeconds(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.valid)
		}
	}
}

// FuzzParseCacheControl checks that any field value parses without
// panicking and that every delta it reports is in range.
func FuzzParseCacheControl(f *testing.F) {
	for _, seed := range []string{
		"max-age=60, public",
		`private="Set-Cookie, X", no-cache="a"`,
		`ext="unterminated`,
		"max-stale, min-fresh=1, s-maxage=99999999999999999999",
		`a="\"", b=c d, ,=,=="`,
		"",
		",",
		"=5",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h := http.Header{"Cache-Control": {s}}
		d := parseCacheControl(h)
		for _, dl := range []delta{d.maxAge, d.sMaxAge, d.maxStale, d.minFresh, d.staleIfError, d.staleWhileRevalidate} {
			if dl.secs < 0 || dl.secs > maxDelta {
				t.Fatalf("parseCacheControl(%q) gave delta %d outside 0..2^31", s, dl.secs)
			}
			if dl.valid && !dl.present {
				t.Fatalf("parseCacheControl(%q) gave a valid delta that is not present", s)
			}
		}
		for _, f := range append(d.privateFields, d.noCacheFields...) {
			if f == "" || strings.ContainsAny(f, ", \t") {
				t.Fatalf("parseCacheControl(%q) gave field name %q", s, f)
			}
		}
	})
}

// FuzzParseAge checks that the Age parser never returns a value outside
// 0..2^31.
func FuzzParseAge(f *testing.F) {
	for _, seed := range []string{"0", "7200", "-1", "1, 2", "99999999999999999999", " 3 "} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n := parseAge(http.Header{"Age": {s}}); n < 0 || n > maxDelta {
			t.Fatalf("parseAge(%q) = %d", s, n)
		}
	})
}
