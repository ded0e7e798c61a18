package l7

import (
	"bytes"
	"encoding/base64"
	"reflect"
	"strings"
	"testing"
)

func TestParseForwarded(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []ForwardedElement
		wantErr bool
	}{
		{"single", "for=192.0.2.60;proto=http;by=203.0.113.43",
			[]ForwardedElement{{For: "192.0.2.60", Proto: "http", By: "203.0.113.43"}}, false},
		{"case-insensitive names", "For=a;PROTO=https", []ForwardedElement{{For: "a", Proto: "https"}}, false},
		{"quoted ipv6 with port", `for="[2001:db8:cafe::17]:4711"`, []ForwardedElement{{For: "[2001:db8:cafe::17]:4711"}}, false},
		{"list with spaces", "for=a, for=b ;host=c", []ForwardedElement{{For: "a"}, {For: "b", Host: "c"}}, false},
		{"quoted-pair", `for="a\"b"`, []ForwardedElement{{For: `a"b`}}, false},
		{"unknown parameter skipped", "for=a;ext=1", []ForwardedElement{{For: "a"}}, false},
		{"empty", "", nil, true},
		{"missing value", "for=", nil, true},
		{"missing equals", "for", nil, true},
		{"repeated parameter", "for=a;for=b", nil, true},
		{"unterminated quote", `for="a`, nil, true},
		{"garbage between elements", "for=a x", nil, true},
		{"control character", "for=\"a\x01\"", nil, true},
		{"too many elements", strings.Repeat("for=a,", maxForwardedElements) + "for=a", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseForwarded(tc.in)
			if tc.wantErr {
				if err == nil {
					t.Errorf("ParseForwarded(%q) = %v, want an error", tc.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseForwarded(%q): %v", tc.in, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseForwarded(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

func TestFormatForwarded(t *testing.T) {
	els := []ForwardedElement{{For: "[2001:db8::1]", Proto: "https"}, {For: "192.0.2.1", Host: "a.test:8080"}}
	want := `for="[2001:db8::1]";proto=https, for=192.0.2.1;host="a.test:8080"`
	if got := FormatForwarded(els); got != want {
		t.Errorf("FormatForwarded = %s, want %s", got, want)
	}
}

// FuzzParseForwarded checks that parsing never panics and that what parses
// formats to text that parses back to the same elements.
func FuzzParseForwarded(f *testing.F) {
	for _, s := range []string{
		"for=192.0.2.60;proto=http;by=203.0.113.43",
		`for="[2001:db8:cafe::17]:4711"`,
		"for=a, for=b;host=c",
		`for="a\"b"`,
		"for=",
		`for="a`,
		";;,,",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		els, err := ParseForwarded(s)
		if err != nil {
			return
		}
		out := FormatForwarded(els)
		var known []ForwardedElement
		for _, el := range els {
			if el != (ForwardedElement{}) {
				known = append(known, el)
			}
		}
		again, err := ParseForwarded(out)
		if len(known) == 0 {
			if err == nil {
				t.Fatalf("ParseForwarded(%q) has no known parameter but formats to %q", s, out)
			}
			return
		}
		if err != nil {
			t.Fatalf("ParseForwarded(FormatForwarded(%q)) = %q: %v", s, out, err)
		}
		if !reflect.DeepEqual(known, again) {
			t.Fatalf("round trip of %q: %+v became %q then %+v", s, known, out, again)
		}
	})
}

func TestParseTicketKeys(t *testing.T) {
	k1 := bytes.Repeat([]byte{1}, 32)
	k2 := bytes.Repeat([]byte{2}, 32)
	b64 := base64.StdEncoding.EncodeToString
	tests := []struct {
		name    string
		in      []byte
		want    int
		wantErr string
	}{
		{"two base64 keys with comment", []byte("# rotate weekly\n" + b64(k1) + "\n\n" + b64(k2) + "\n"), 2, ""},
		{"crlf", []byte(b64(k1) + "\r\n"), 1, ""},
		{"raw keys", append(append([]byte{}, k1...), k2...), 2, ""},
		{"short key", []byte(b64(k1[:16]) + "\n"), 0, "want 32"},
		{"not base64", []byte("!!!!\n"), 0, "invalid base64"},
		{"empty", []byte("\n# nothing\n"), 0, "no keys"},
		{"too many", []byte(strings.Repeat(b64(k1)+"\n", maxTicketKeys+1)), 0, "more than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := ParseTicketKeys(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("ParseTicketKeys = %v, want error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseTicketKeys: %v", err)
			}
			if len(keys) != tc.want {
				t.Errorf("ParseTicketKeys returned %d keys, want %d", len(keys), tc.want)
			}
		})
	}
	keys, _ := ParseTicketKeys([]byte(b64(k1) + "\n" + b64(k2)))
	if !bytes.Equal(keys[0][:], k1) || !bytes.Equal(keys[1][:], k2) {
		t.Error("keys out of file order: the first line must encrypt")
	}
}

func FuzzParseTicketKeys(f *testing.F) {
	f.Add([]byte(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)) + "\n"))
	f.Add(bytes.Repeat([]byte{0xff}, 64))
	f.Add([]byte("# comment\n\n"))
	f.Add([]byte("AAAA\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := ParseTicketKeys(data)
		if err != nil {
			return
		}
		if len(keys) == 0 || len(keys) > maxTicketKeys {
			t.Fatalf("ParseTicketKeys(%q) returned %d keys, want 1..%d", data, len(keys), maxTicketKeys)
		}
	})
}
