package conninfo

import (
	"fmt"
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestAccessors(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	info := &Info{Client: netip.MustParseAddrPort("203.0.113.9:5000"), UniqueID: "l4-42", SNI: "www.example.com"}
	r = r.WithContext(NewContext(r.Context(), info))
	if got := ClientAddr(r); got != netip.MustParseAddr("203.0.113.9") {
		t.Errorf("ClientAddr = %s, want 203.0.113.9", got)
	}
	if got := UniqueID(r); got != "l4-42" {
		t.Errorf("UniqueID = %q, want l4-42", got)
	}
	if got := SNI(r); got != "www.example.com" {
		t.Errorf("SNI = %q, want www.example.com", got)
	}
}

func TestClientAddrFallsBackToRemoteAddr(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "[::ffff:192.0.2.4]:1234"
	if got := ClientAddr(r); got != netip.MustParseAddr("192.0.2.4") {
		t.Errorf("ClientAddr without Info = %s, want 192.0.2.4", got)
	}
	r.RemoteAddr = "garbage"
	if got := ClientAddr(r); got.IsValid() {
		t.Errorf("ClientAddr of unparsable RemoteAddr = %s, want the zero Addr", got)
	}
}

func ExampleClientAddr() {
	r := httptest.NewRequest("GET", "/", nil)
	info := &Info{Client: netip.MustParseAddrPort("198.51.100.7:40000")}
	r = r.WithContext(NewContext(r.Context(), info))
	fmt.Println(ClientAddr(r))
	// Output: 198.51.100.7
}
