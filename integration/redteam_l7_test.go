//go:build integration

package integration

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// redteamHeader returns a PROXY v2 header for 127.0.0.9:40000 to dst with
// tlvs appended as given, so tests can send malformed TLVs.
func redteamHeader(dst net.Addr, tlvs []byte) []byte {
	tcp := dst.(*net.TCPAddr)
	b := []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11")
	b = binary.BigEndian.AppendUint16(b, uint16(12+len(tlvs)))
	b = append(b, 127, 0, 0, 9)
	b = append(b, tcp.IP.To4()...)
	b = binary.BigEndian.AppendUint16(b, 40000)
	b = binary.BigEndian.AppendUint16(b, uint16(tcp.Port))
	return append(b, tlvs...)
}

// redteamHeaderCRC returns a header with a PP2_TYPE_CRC32C TLV whose
// checksum is right when corrupt is false.
func redteamHeaderCRC(dst net.Addr, corrupt bool) []byte {
	raw := redteamHeader(dst, []byte{0x03, 0, 4, 0, 0, 0, 0})
	sum := crc32.Checksum(raw, crc32.MakeTable(crc32.Castagnoli))
	if corrupt {
		sum ^= 1
	}
	binary.BigEndian.PutUint32(raw[len(raw)-4:], sum)
	return raw
}

// sendRaw writes data to addr and returns the first response status line,
// or "" when the connection closed without one.
func sendRaw(t *testing.T, addr string, data []byte) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Write(data); err != nil {
		return ""
	}
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line)
}

// TestRedteamL7HostileInput runs the l7 binary behind a PROXY-speaking
// client and sends it malformed PROXY headers, forged forwarding fields,
// an HTTP/2 rapid reset and a huge configuration on SIGHUP. After each, a
// good request must still be served and the process must still run.
func TestRedteamL7HostileInput(t *testing.T) {
	dir := t.TempDir()
	backendAddr, addr := freeAddr(t), freeAddr(t)
	startBackendProc(t, "b1", backendAddr)
	l7 := startL7(t, dir, fmt.Sprintf(`
listeners:
  - name: edge
    address: %q
    h2c: true
    proxy_protocol:
      trusted: ["127.0.0.1/32"]
routes:
  - name: all
    upstream: web
upstreams:
  - name: web
    idle_timeout: 1s
    backends: [{address: %q}]
access_log:
  path: "off"
`, addr, backendAddr))
	tcpAddr, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	request := []byte("GET /ok HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
	good := func(t *testing.T) {
		t.Helper()
		if got := sendRaw(t, addr, append(redteamHeader(tcpAddr, nil), request...)); got != "HTTP/1.1 200 OK" {
			t.Fatalf("good request after the attack: status line %q, want 200", got)
		}
		if l7.exited() {
			t.Fatal("l7 exited")
		}
	}
	good(t)

	t.Run("proxy headers", func(t *testing.T) {
		cases := map[string][]byte{
			"wrong crc32c":    redteamHeaderCRC(tcpAddr, true),
			"tlv overrun":     redteamHeader(tcpAddr, []byte{0x04, 0xff, 0xff, 0x00}),
			"stray tlv byte":  redteamHeader(tcpAddr, []byte{0x04}),
			"unique id > 128": redteamHeader(tcpAddr, append([]byte{0x05, 0, 200}, bytes.Repeat([]byte("u"), 200)...)),
			"garbage":         []byte("hello\r\n\r\n"),
		}
		for name, header := range cases {
			if got := sendRaw(t, addr, append(header, request...)); got != "" {
				t.Errorf("%s: got %q, want the connection closed", name, got)
			}
		}
		// A header cut short is closed once proxy_protocol.timeout (5s by
		// default) passes.
		if got := sendRaw(t, addr, redteamHeader(tcpAddr, nil)[:20]); got != "" {
			t.Errorf("truncated header: got %q, want the connection closed", got)
		}
		if got := sendRaw(t, addr, append(redteamHeaderCRC(tcpAddr, false), request...)); got != "HTTP/1.1 200 OK" {
			t.Errorf("correct crc32c: status line %q, want 200", got)
		}
		good(t)
	})

	t.Run("forged forwarding fields", func(t *testing.T) {
		c := l4Client(t, "198.51.100.7:5000", nil, "")
		req := newRequest(t, "GET", "http://"+addr+"/fwd", nil)
		req.Host = "a.test"
		req.Header.Set("X-Forwarded-Prefix", "/evil")
		req.Header.Set("X-Forwarded-Server", "evil")
		req.Header.Set("X-Forwarded-For", "6.6.6.6")
		resp, got := getEcho(t, c, req)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200", resp.StatusCode)
		}
		for _, name := range []string{"X-Forwarded-Prefix", "X-Forwarded-Server"} {
			if v, ok := got.Headers[name]; ok {
				t.Errorf("backend received %s: %q, want it removed", name, v)
			}
		}
		if v := got.Headers["X-Forwarded-For"]; len(v) != 1 || v[0] != "198.51.100.7" {
			t.Errorf("backend X-Forwarded-For = %q, want the PROXY client only", v)
		}
	})

	t.Run("h2 rapid reset", func(t *testing.T) {
		baseline, ok := metricValue(t, l7.admin, "go_goroutines")
		if !ok {
			t.Fatal("no go_goroutines on the admin listener")
		}
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(redteamHeader(tcpAddr, nil))
		c.Write([]byte(http2.ClientPreface))
		fr := http2.NewFramer(c, c)
		fr.WriteSettings()
		var block bytes.Buffer
		enc := hpack.NewEncoder(&block)
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "a.test"}, {":path", "/rr"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		for i := uint32(0); i < 5000; i++ {
			id := 1 + 2*i
			if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndHeaders: true, EndStream: true}) != nil {
				break
			}
			if fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
				break
			}
		}
		// Go's HTTP/2 server bounds the handlers of reset streams instead
		// of always sending GOAWAY, so the check is that the work ends:
		// the goroutines return to about where they started.
		for {
			if _, err := fr.ReadFrame(); err != nil {
				break
			}
		}
		c.Close()
		eventually(t, 30*time.Second, "goroutines back to the baseline", func() bool {
			now, ok := metricValue(t, l7.admin, "go_goroutines")
			return ok && now <= baseline+10
		})
		good(t)
	})

	t.Run("sighup with a huge config", func(t *testing.T) {
		before, err := os.ReadFile(l7.config)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		b.WriteString("l7:\n  routes:\n")
		for i := range 150000 {
			fmt.Fprintf(&b, "    - name: r%d\n      upstream: web\n", i)
		}
		if err := os.WriteFile(l7.config, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.WriteFile(l7.config, before, 0o600) })
		if err := l7.signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "the reload to be rejected", func() bool {
			return strings.Contains(l7.out.String(), "reload rejected")
		})
		for _, line := range strings.Split(l7.out.String(), "\n") {
			if len(line) > 64<<10 {
				t.Errorf("a log line of %d bytes, want at most 64 KiB: %.200s", len(line), line)
			}
		}
		good(t)
	})
}
