package l7

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// rawProxyV2 builds a PROXY v2 header for a TCP over IPv4 connection from
// 192.0.2.1:1000 to 192.0.2.2:443 followed by tlvs, which may be malformed.
func rawProxyV2(tlvs []byte) []byte {
	b := append([]byte{}, proxyproto.SIGV2...)
	b = append(b, 0x21, 0x11)
	b = binary.BigEndian.AppendUint16(b, uint16(12+len(tlvs)))
	b = append(b, 192, 0, 2, 1, 192, 0, 2, 2)
	b = binary.BigEndian.AppendUint16(b, 1000)
	b = binary.BigEndian.AppendUint16(b, 443)
	return append(b, tlvs...)
}

// withCRC32C appends a PP2_TYPE_CRC32C TLV to the header built from tlvs
// and fills in its checksum, corrupted by xor.
func withCRC32C(tlvs []byte, xor uint32) []byte {
	full := append(append([]byte{}, tlvs...), byte(proxyproto.PP2_TYPE_CRC32C), 0, 4, 0, 0, 0, 0)
	raw := rawProxyV2(full)
	sum := crc32.Checksum(raw, crc32.MakeTable(crc32.Castagnoli)) ^ xor
	binary.BigEndian.PutUint32(raw[len(raw)-4:], sum)
	return raw
}

func readProxyHeader(t *testing.T, raw []byte) *proxyproto.Header {
	t.Helper()
	h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatalf("read header: %v", err)
	}
	return h
}

func TestValidateProxyHeader(t *testing.T) {
	uniqueID := func(n int) []byte {
		return append([]byte{byte(proxyproto.PP2_TYPE_UNIQUE_ID), 0, byte(n)}, strings.Repeat("a", n)...)
	}
	tests := []struct {
		name    string
		raw     []byte
		wantErr bool
	}{
		{name: "no tlvs", raw: rawProxyV2(nil)},
		{name: "unique id", raw: rawProxyV2(uniqueID(16))},
		{name: "unique id of 128 bytes", raw: rawProxyV2(uniqueID(128))},
		{name: "unique id over 128 bytes", raw: rawProxyV2(uniqueID(129)), wantErr: true},
		{name: "tlv length beyond header", raw: rawProxyV2([]byte{0x04, 0xff, 0xff, 0x00}), wantErr: true},
		{name: "stray byte after tlvs", raw: rawProxyV2([]byte{0x04}), wantErr: true},
		{name: "correct crc32c", raw: withCRC32C(uniqueID(8), 0)},
		{name: "wrong crc32c", raw: withCRC32C(uniqueID(8), 1), wantErr: true},
		{name: "crc32c of 3 bytes", raw: rawProxyV2([]byte{byte(proxyproto.PP2_TYPE_CRC32C), 0, 3, 0, 0, 0}), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := validateProxyHeader(readProxyHeader(t, tc.raw))
			if tc.wantErr && err == nil {
				t.Errorf("validateProxyHeader accepted the header, want an error")
			}
			if !tc.wantErr && err != nil {
				t.Errorf("validateProxyHeader: %v, want nil", err)
			}
		})
	}
}

func TestValidateProxyHeaderV1(t *testing.T) {
	h := readProxyHeader(t, []byte("PROXY TCP4 192.0.2.1 192.0.2.2 1000 443\r\n"))
	if err := validateProxyHeader(h); err != nil {
		t.Errorf("validateProxyHeader(v1): %v, want nil", err)
	}
}

func FuzzValidateProxyHeader(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0x05, 0x00, 0x02, 'i', 'd'})
	f.Add([]byte{0x04, 0xff, 0xff, 0x00})
	f.Add(withCRC32C(nil, 0)[28:])
	f.Fuzz(func(t *testing.T, tlvs []byte) {
		if len(tlvs) > 4096 {
			return
		}
		h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(rawProxyV2(tlvs))))
		if err != nil {
			return
		}
		// Only the absence of panics is checked here, because the table
		// test covers which headers are rejected.
		_ = validateProxyHeader(h)
	})
}

// TestListenerRejectsBadProxyTLVs sends real PROXY v2 headers over TCP to
// a listener that trusts 127.0.0.1 and checks that only the valid one is
// served.
func TestListenerRejectsBadProxyTLVs(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer backend.Close()
	s := startTestServer(t, fmt.Sprintf(`
  listeners:
    - name: edge
      address: 127.0.0.1:0
      proxy_protocol:
        trusted: ["127.0.0.1/32"]
  routes:
    - name: all
      upstream: web
  upstreams:
    - name: web
      backends: [{address: %q}]
`, strings.TrimPrefix(backend.URL, "http://")))
	addr := s.Addrs()["edge"].String()

	tests := []struct {
		name   string
		header []byte
		served bool
	}{
		{name: "valid crc32c", header: withCRC32C(nil, 0), served: true},
		{name: "wrong crc32c", header: withCRC32C(nil, 1), served: false},
		{name: "tlv length beyond header", header: rawProxyV2([]byte{0x04, 0xff, 0xff, 0x00}), served: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			req := "GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
			if _, err := c.Write(append(tc.header, req...)); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if tc.served {
				if err != nil {
					t.Fatalf("read response: %v", err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("status %d, want 200", resp.StatusCode)
				}
				return
			}
			if err == nil {
				resp.Body.Close()
				t.Errorf("got status %d, want the connection closed", resp.StatusCode)
			}
		})
	}
}
