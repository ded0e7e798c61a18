//go:build integration

package integration

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// tlsConnect opens a TLS connection to addr with server name sni, sends one
// request for host and returns the served leaf certificate, the response
// status and the connection state.
func tlsConnect(t *testing.T, addr, sni, host string, cache tls.ClientSessionCache) (*x509.Certificate, int, tls.ConnectionState) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	// The test checks which certificate is served, not that it chains to
	// a root, so verification is off.
	c := tls.Client(raw, &tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}, ClientSessionCache: cache}) // #nosec G402
	if err := c.Handshake(); err != nil {
		t.Fatalf("tls handshake with SNI %q: %v", sni, err)
	}
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response for host %q on SNI %q: %v", host, sni, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	st := c.ConnectionState()
	return st.PeerCertificates[0], resp.StatusCode, st
}

func TestL7Certificates(t *testing.T) {
	dir := t.TempDir()
	aCert, aKey, _ := selfSignedCert(t, dir, "a-", "a.example.test")
	bCert, bKey, _ := selfSignedCert(t, dir, "b-", "*.b.example.test")
	backend, _ := startEcho(t, "b")
	addr := freeAddr(t)
	l7 := startL7(t, dir, fmt.Sprintf(`listeners:
  - name: tls
    address: %s
    tls:
      certificates:
        - cert_file: %s
          key_file: %s
        - cert_file: %s
          key_file: %s
routes:
  - name: all
    upstream: b
upstreams:
  - name: b
    backends:
      - address: %s
`, addr, aCert, aKey, bCert, bKey, backend))

	t.Run("sni picks certificate", func(t *testing.T) {
		tests := []struct {
			name, sni, wantCN string
		}{
			{"exact", "a.example.test", "a.example.test"},
			{"wildcard", "x.b.example.test", "*.b.example.test"},
			{"wildcard covers one label only", "y.x.b.example.test", "a.example.test"},
			{"unknown name gets default", "unknown.test", "a.example.test"},
			{"no sni gets default", "", "a.example.test"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				cert, _, _ := tlsConnect(t, addr, tc.sni, "a.example.test", nil)
				if cert.Subject.CommonName != tc.wantCN {
					t.Errorf("SNI %q served %q, want %q", tc.sni, cert.Subject.CommonName, tc.wantCN)
				}
			})
		}
	})

	t.Run("host of another certificate gets 421", func(t *testing.T) {
		if _, status, _ := tlsConnect(t, addr, "a.example.test", "x.b.example.test", nil); status != http.StatusMisdirectedRequest {
			t.Errorf("Host x.b.example.test on SNI a.example.test = %d, want 421", status)
		}
		if _, status, _ := tlsConnect(t, addr, "a.example.test", "a.example.test", nil); status != http.StatusOK {
			t.Errorf("Host a.example.test on SNI a.example.test = %d, want 200", status)
		}
		if _, status, _ := tlsConnect(t, addr, "a.example.test", "elsewhere.test", nil); status != http.StatusOK {
			t.Errorf("Host elsewhere.test (served by no certificate) = %d, want 200", status)
		}
	})

	t.Run("handshakes counted", func(t *testing.T) {
		series := `tidegate_l7_tls_handshakes_total{listener="tls",resumed="false",version="1.3"}`
		if v, ok := metricValue(t, l7.admin, series); !ok || v < 5 {
			t.Errorf("%s = %v (found %v), want at least 5", series, v, ok)
		}
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(raw, "not a TLS client hello\r\n\r\n")
		_, _ = io.Copy(io.Discard, raw)
		raw.Close()
		eventually(t, 5*time.Second, "failed handshake counted", func() bool {
			v, ok := metricValue(t, l7.admin, `tidegate_l7_tls_handshake_errors_total{listener="tls"}`)
			return ok && v >= 1
		})
	})

	t.Run("replaced certificate served without restart", func(t *testing.T) {
		old, _, _ := tlsConnect(t, addr, "a.example.test", "a.example.test", nil)
		staging := t.TempDir()
		newCert, newKey, _ := selfSignedCert(t, staging, "a-", "a.example.test")
		// Rotation tools replace files by rename, so the test does too.
		for _, mv := range [][2]string{{newKey, aKey}, {newCert, aCert}} {
			if err := os.Rename(mv[0], mv[1]); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, 10*time.Second, "new certificate served", func() bool {
			cert, _, _ := tlsConnect(t, addr, "a.example.test", "a.example.test", nil)
			return cert.SerialNumber.Cmp(old.SerialNumber) != 0
		})
	})
}

// TestL7SessionTicketsShared resumes a TLS session on a second L7 process
// that shares the first one's ticket key file, and fails to on a third that
// does not.
func TestL7SessionTicketsShared(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, _ := selfSignedCert(t, dir, "t-", "t.example.test")
	backend, _ := startEcho(t, "b")
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		t.Fatal(err)
	}
	keyFile2 := writeFile(t, dir, "tickets.key", "# fleet ticket key\n"+base64.StdEncoding.EncodeToString(key[:])+"\n")

	start := func(tickets string) string {
		addr := freeAddr(t)
		ticketLine := ""
		if tickets != "" {
			ticketLine = "      session_ticket_key_file: " + tickets + "\n"
		}
		startL7(t, dir, fmt.Sprintf(`listeners:
  - name: tls
    address: %s
    tls:
      certificates:
        - cert_file: %s
          key_file: %s
%sroutes:
  - name: all
    upstream: b
upstreams:
  - name: b
    backends:
      - address: %s
`, addr, certFile, keyFile, ticketLine, backend))
		return addr
	}
	first, second, stranger := start(keyFile2), start(keyFile2), start("")

	cache := tls.NewLRUClientSessionCache(4)
	if _, _, st := tlsConnect(t, first, "t.example.test", "t.example.test", cache); st.DidResume {
		t.Fatal("first connection resumed with an empty cache")
	}
	if _, _, st := tlsConnect(t, second, "t.example.test", "t.example.test", cache); !st.DidResume {
		t.Error("second node with the same ticket keys did not resume the session")
	}

	cache = tls.NewLRUClientSessionCache(4)
	tlsConnect(t, first, "t.example.test", "t.example.test", cache)
	if _, _, st := tlsConnect(t, stranger, "t.example.test", "t.example.test", cache); st.DidResume {
		t.Error("node with its own ticket keys resumed a session from another node")
	}
}

// TestL7AccessLogReopen renames the access log, sends SIGUSR1 and checks
// that new lines go to a fresh file at the configured path.
func TestL7AccessLogReopen(t *testing.T) {
	dir := t.TempDir()
	backend, _ := startEcho(t, "b")
	addr := freeAddr(t)
	logPath := filepath.Join(dir, "access.log")
	l7 := startL7(t, dir, fmt.Sprintf(`listeners:
  - name: edge
    address: %s
routes:
  - name: all
    upstream: b
upstreams:
  - name: b
    backends:
      - address: %s
access_log:
  path: %s
`, addr, backend, logPath))

	get := func(path string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	get("/before")
	rotated := logPath + ".1"
	if err := os.Rename(logPath, rotated); err != nil {
		t.Fatal(err)
	}
	if err := l7.signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "access log reopened at its path", func() bool {
		_, err := os.Stat(logPath)
		return err == nil
	})
	get("/after")
	eventually(t, 5*time.Second, "line for /after in the new file", func() bool {
		for _, l := range accessLogLines(t, logPath) {
			if l["path"] == "/after" {
				return true
			}
		}
		return false
	})
	for _, l := range accessLogLines(t, rotated) {
		if l["path"] == "/after" {
			t.Error("line for /after went to the rotated file")
		}
	}
	if lines := accessLogLines(t, rotated); len(lines) == 0 || lines[0]["path"] != "/before" {
		t.Errorf("rotated file lines = %v, want the /before request", lines)
	}
}
