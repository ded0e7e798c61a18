package inspect

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalizePath(t *testing.T) {
	tests := []struct {
		in   string
		want string
		err  error
	}{
		{"/", "/", nil},
		{"/a/b", "/a/b", nil},
		{"//a///b", "/a/b", nil},
		{"/a/./b", "/a/b", nil},
		{"/a/../b", "/b", nil},
		{"/a/b/..", "/a/", nil},
		{"/a/b/.", "/a/b/", nil},
		{"/a/", "/a/", nil},
		{"/%7Euser/%41%62", "/~user/Ab", nil},
		{"/%2e%2e/etc", "", ErrAboveRoot},
		{"/a/%2E%2E/%2e/b", "/b", nil},
		{"/a/%2fb", "", ErrEncodedSlash},
		{"/a/%2Fb", "", ErrEncodedSlash},
		{"/a/%3f%20b", "/a/%3F%20b", nil},
		{"/..", "", ErrAboveRoot},
		{"/a/../../b", "", ErrAboveRoot},
		{"/a%00", "", ErrEncodedNUL},
		{"/a%zz", "", ErrBadEscape},
		{"/a%4", "", ErrBadEscape},
		{"a/b", "", ErrNotAbsolute},
		{"", "", ErrNotAbsolute},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := NormalizePath(tc.in)
			if !errors.Is(err, tc.err) {
				t.Fatalf("NormalizePath(%q) error = %v, want %v", tc.in, err, tc.err)
			}
			if got != tc.want {
				t.Errorf("NormalizePath(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "//x/./y/", "/%2e%2E/", "/%2f", "/a%41/%7e", "/a/b/..", "/%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got, err := NormalizePath(p)
		if err != nil {
			return
		}
		if !strings.HasPrefix(got, "/") {
			t.Errorf("NormalizePath(%q) = %q, which is not absolute", p, got)
		}
		for _, bad := range []string{"//", "/./", "/../"} {
			if strings.Contains(got, bad) {
				t.Errorf("NormalizePath(%q) = %q, which contains %q", p, got, bad)
			}
		}
		if strings.HasSuffix(got, "/.") || strings.HasSuffix(got, "/..") {
			t.Errorf("NormalizePath(%q) = %q, which ends in a dot segment", p, got)
		}
		again, err := NormalizePath(got)
		if err != nil || again != got {
			t.Errorf("NormalizePath(%q) = %q, %v; want it unchanged", got, again, err)
		}
	})
}

// FuzzFramer checks that the framer reaches the same verdict and output
// whether the stream arrives whole or split at any point, and never panics.
func FuzzFramer(f *testing.F) {
	seeds := []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\nHost: a\n\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n\x00\x01",
	}
	for _, s := range seeds {
		f.Add([]byte(s), uint16(7))
	}
	lim := Limits{MaxRequestLine: 64, MaxURILength: 32, MaxHeaderBytes: 256, MaxHeaderCount: 8, MaxBodyBytes: 128}
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		whole := newFramer(lim)
		rejWhole := whole.feed(data)

		parts := newFramer(lim)
		cut := int(split) % (len(data) + 1)
		rejParts := parts.feed(data[:cut])
		if rejParts == nil {
			rejParts = parts.feed(data[cut:])
		}
		if (rejWhole == nil) != (rejParts == nil) || rejWhole != nil && *rejWhole != *rejParts {
			t.Fatalf("verdict differs: whole %+v, split at %d %+v", rejWhole, cut, rejParts)
		}
		if string(whole.out) != string(parts.out) {
			t.Fatalf("output differs: whole %q, split at %d %q", whole.out, cut, parts.out)
		}
		if len(whole.out) > len(data) {
			t.Fatalf("output %q is longer than the input %q", whole.out, data)
		}
		if rejWhole != nil && reasonStatus[rejWhole.Reason] == 0 && rejWhole.Status != 400 {
			t.Fatalf("rejection %+v has an unexpected status", rejWhole)
		}
	})
}

func BenchmarkFramerRequest(b *testing.B) {
	req := []byte("POST /api/v1/items?id=7 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: bench/1.0\r\n" +
		"Accept: */*\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n{\"name\":\"widget\",\"qty\":10}\n")
	f := newFramer(Limits{MaxRequestLine: 8 << 10, MaxURILength: 8 << 10, MaxHeaderBytes: 64 << 10, MaxHeaderCount: 100})
	b.SetBytes(int64(len(req)))
	b.ReportAllocs()
	for b.Loop() {
		if rej := f.feed(req); rej != nil {
			b.Fatalf("feed() = %+v", rej)
		}
		f.out = f.out[:0]
	}
}

func BenchmarkNormalizePath(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NormalizePath("/static//css/./site%2Dmain.css"); err != nil {
			b.Fatal(err)
		}
	}
}
