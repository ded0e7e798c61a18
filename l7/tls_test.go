package l7

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tidegate/tidegate/shared/config"
)

// writeCert writes a self-signed certificate for names into dir and returns
// its config entry.
func writeCert(t *testing.T, dir, prefix string, names ...string) config.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := config.Certificate{CertFile: filepath.Join(dir, prefix+".crt"), KeyFile: filepath.Join(dir, prefix+".key")}
	if err := os.WriteFile(c.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// handshake runs a TLS handshake over loopback TCP and returns the
// client's view of it. TCP buffers the server's session tickets, which an
// in-memory pipe would block on.
func handshake(t *testing.T, server *tls.Config, client *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	errc := make(chan error, 1)
	go func() {
		a, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		s := tls.Server(a, server)
		errc <- s.Handshake()
		s.Close()
	}()
	b, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(b, client)
	err = c.Handshake()
	st := c.ConnectionState()
	c.Close()
	<-errc
	return st, err
}

func TestMinVersion(t *testing.T) {
	dir := t.TempDir()
	cert := writeCert(t, dir, "a", "a.test")
	tests := []struct {
		name      string
		min       string
		clientMax uint16
		ok        bool
	}{
		{"default allows 1.2", "1.2", tls.VersionTLS12, true},
		{"default rejects 1.1", "1.2", tls.VersionTLS11, false},
		{"1.3 rejects 1.2", "1.3", tls.VersionTLS12, false},
		{"1.3 allows 1.3", "1.3", tls.VersionTLS13, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, err := newCertStore(&config.TLS{Certificates: []config.Certificate{cert}, MinVersion: tc.min})
			if err != nil {
				t.Fatal(err)
			}
			// #nosec G402 -- the test checks version negotiation only.
			_, err = handshake(t, st.config, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tc.clientMax, ServerName: "a.test"})
			if (err == nil) != tc.ok {
				t.Errorf("handshake with client max %x on min_version %s: err %v, want success %v", tc.clientMax, tc.min, err, tc.ok)
			}
		})
	}
}

func TestALPN(t *testing.T) {
	dir := t.TempDir()
	st, err := newCertStore(&config.TLS{Certificates: []config.Certificate{writeCert(t, dir, "a", "a.test")}, MinVersion: "1.2"})
	if err != nil {
		t.Fatal(err)
	}
	for _, proto := range []string{"h2", "http/1.1"} {
		// #nosec G402 -- the test checks ALPN only.
		cs, err := handshake(t, st.config, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{proto}})
		if err != nil {
			t.Fatal(err)
		}
		if cs.NegotiatedProtocol != proto {
			t.Errorf("ALPN offer %s negotiated %q", proto, cs.NegotiatedProtocol)
		}
	}
}

func TestCertStoreReload(t *testing.T) {
	dir := t.TempDir()
	cert := writeCert(t, dir, "a", "a.test")
	st, err := newCertStore(&config.TLS{Certificates: []config.Certificate{cert}, MinVersion: "1.2"})
	if err != nil {
		t.Fatal(err)
	}
	first := st.current.Load().def.Leaf.SerialNumber

	writeCert(t, dir, "a", "a.test")
	if err := st.reload(); err != nil {
		t.Fatalf("reload after rotation: %v", err)
	}
	second := st.current.Load().def.Leaf.SerialNumber
	if first.Cmp(second) == 0 {
		t.Fatal("reload kept the old certificate")
	}

	if err := os.WriteFile(cert.CertFile, []byte("half written"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := st.reload(); err == nil {
		t.Fatal("reload of a broken certificate file succeeded")
	}
	if got := st.current.Load().def.Leaf.SerialNumber; got.Cmp(second) != 0 {
		t.Error("failed reload replaced the serving certificate")
	}
}

func TestCertStoreMissingFile(t *testing.T) {
	_, err := newCertStore(&config.TLS{Certificates: []config.Certificate{{CertFile: "/nonexistent/a.crt", KeyFile: "/nonexistent/a.key"}}, MinVersion: "1.2"})
	if err == nil {
		t.Fatal("newCertStore with missing files succeeded")
	}
}
