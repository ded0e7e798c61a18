package compress

import (
	"slices"
	"strings"
	"testing"
)

func TestNegotiate(t *testing.T) {
	prefs := []string{"zstd", "br", "gzip"}
	tests := []struct {
		accept []string
		want   string
	}{
		{nil, ""},
		{[]string{""}, ""},
		{[]string{"gzip"}, "gzip"},
		{[]string{"GZIP"}, "gzip"},
		{[]string{"x-gzip"}, "gzip"},
		{[]string{"gzip, br"}, "br"},
		{[]string{"gzip", "br"}, "br"},
		{[]string{"gzip;q=1.0, br;q=0.9"}, "gzip"},
		{[]string{"gzip;q=0.9, br;q=0.9, zstd;q=0.9"}, "zstd"},
		{[]string{"br;q=0"}, ""},
		{[]string{"*"}, "zstd"},
		{[]string{"*;q=0"}, ""},
		{[]string{"*, zstd;q=0"}, "br"},
		{[]string{"gzip; q=0.5"}, "gzip"},
		{[]string{"gzip;Q=0.5"}, "gzip"},
		{[]string{"gzip;q=2"}, ""},
		{[]string{"gzip;q=1.5"}, ""},
		{[]string{"gzip;q=0.1234"}, ""},
		{[]string{"gzip;q=abc, br"}, "br"},
		{[]string{"gzip;q=.5"}, ""},
		{[]string{"deflate, identity"}, ""},
		{[]string{" , ,gzip"}, "gzip"},
		{[]string{"gzip;level=1;q=0.2, br;q=0.1"}, "gzip"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.accept, "|"), func(t *testing.T) {
			if got := Negotiate(tc.accept, prefs); got != tc.want {
				t.Errorf("Negotiate(%q) = %q, want %q", tc.accept, got, tc.want)
			}
		})
	}
}

func FuzzNegotiate(f *testing.F) {
	for _, s := range []string{"gzip", "gzip;q=0.5, br;q=0.8", "*;q=0", "x-gzip, identity;q=0", "br;q=1.000", "zstd;q=0.", ";;,=q"} {
		f.Add(s)
	}
	prefs := []string{"zstd", "br", "gzip"}
	f.Fuzz(func(t *testing.T, header string) {
		got := Negotiate([]string{header}, prefs)
		if got != "" && !slices.Contains(prefs, got) {
			t.Fatalf("Negotiate(%q) = %q, which is not offered", header, got)
		}
		// Excluding the chosen coding must change the choice.
		if got != "" {
			again := Negotiate([]string{header, got + ";q=0"}, prefs)
			if again == got {
				t.Fatalf("Negotiate(%q + %s;q=0) still chose %q", header, got, got)
			}
		}
		for elem := range strings.SplitSeq(header, ",") {
			if c, q, ok := parseElement(elem); ok && (q < 0 || q > 1000 || c == "") {
				t.Fatalf("parseElement(%q) = %q, %d", elem, c, q)
			}
		}
	})
}
