package l7

import (
	"net/http/httputil"
	"testing"
)

// BenchmarkForwardingRewrite measures the forwarding-header rewrite that
// runs on every proxied request: strip inbound copies, then set
// X-Forwarded-*, X-Real-IP and Forwarded from the client address.
func BenchmarkForwardingRewrite(b *testing.B) {
	s, _ := testServer(b, &captureTransport{})
	in := clientRequest("GET", "http://www.example.test/path?q=1", "198.51.100.7:40000", true)
	in.Header.Set("X-Forwarded-For", "203.0.113.9")
	in.Header.Set("Forwarded", "for=203.0.113.9;proto=https")
	in.Header.Set("Accept", "*/*")

	b.ReportAllocs()
	for b.Loop() {
		pr := &httputil.ProxyRequest{In: in, Out: in.Clone(in.Context())}
		s.rewrite(pr)
		if pr.Out.Header.Get("X-Forwarded-For") == "" {
			b.Fatal("rewrite set no X-Forwarded-For")
		}
	}
}

func BenchmarkParseForwarded(b *testing.B) {
	v := `for=192.0.2.60;proto=http;by=203.0.113.43, for="[2001:db8:cafe::17]:4711";host=example.com`
	b.ReportAllocs()
	for b.Loop() {
		els, err := ParseForwarded(v)
		if err != nil || len(els) != 2 {
			b.Fatalf("ParseForwarded(%q) = %v, %v", v, els, err)
		}
	}
}
