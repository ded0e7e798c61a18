package cache

import (
	"net/http"
	"testing"
)

func TestNotModified(t *testing.T) {
	lm := httpDate(t0)
	tests := []struct {
		name         string
		req          http.Header
		resp         http.Header
		dateFallback bool
		want         bool
	}{
		{"strong etag match", header("If-None-Match", `"a"`), header("ETag", `"a"`), false, true},
		{"weak comparison", header("If-None-Match", `W/"a"`), header("ETag", `"a"`), false, true},
		{"list with a comma inside a tag", header("If-None-Match", `"x,y", "a"`), header("ETag", `"a"`), false, true},
		{"comma inside tag is not a separator", header("If-None-Match", `"a,b"`), header("ETag", `"a"`), false, false},
		{"star", header("If-None-Match", "*"), header(), false, true},
		{"no etag in response", header("If-None-Match", `"a"`), header(), false, false},
		{"if-none-match beats if-modified-since", header("If-None-Match", `"b"`, "If-Modified-Since", lm), header("ETag", `"a"`, "Last-Modified", lm), false, false},
		{"ims equal", header("If-Modified-Since", lm), header("Last-Modified", lm), false, true},
		{"ims older", header("If-Modified-Since", httpDate(t0.Add(-1e9))), header("Last-Modified", lm), false, false},
		{"ims uses Date for stored responses", header("If-Modified-Since", lm), header("Date", lm), true, true},
		{"ims ignores Date otherwise", header("If-Modified-Since", lm), header("Date", lm), false, false},
		{"ims invalid", header("If-Modified-Since", "soon"), header("Last-Modified", lm), false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := notModified(tc.req, tc.resp, tc.dateFallback); got != tc.want {
				t.Errorf("notModified(%v, %v) = %v, want %v", tc.req, tc.resp, got, tc.want)
			}
		})
	}
}

// FuzzETagList checks that If-None-Match parsing ends and that a list
// made of one tag always matches that tag.
func FuzzETagList(f *testing.F) {
	for _, seed := range []string{`"a"`, `W/"a", "b"`, `"a,b"`, `*`, `"unterminated`, `W/`, `,,,`} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_ = etagListMatches(s, `"x"`)
		tag := `"` + stripQuotes(s) + `"`
		if !etagListMatches(tag, tag) {
			t.Fatalf("etagListMatches(%q, %q) = false", tag, tag)
		}
	})
}

func stripQuotes(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '"' {
			out = append(out, s[i])
		}
	}
	return string(out)
}
