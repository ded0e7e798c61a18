// Command tidegate-democert writes a self-signed certificate and key for the
// docker-compose demo, so the demo needs no tools on the host and commits no
// private key. Do not use its output outside a demo.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	dir := flag.String("dir", "/certs", "`directory` to write demo.crt and demo.key into")
	names := flag.String("names", "localhost,127.0.0.1", "comma-separated DNS `names` and IP addresses for the certificate")
	days := flag.Int("days", 30, "validity in `days`")
	force := flag.Bool("force", false, "overwrite an existing certificate (default: keep it)")
	flag.Parse()

	if err := run(*dir, strings.Split(*names, ","), *days, *force); err != nil {
		fmt.Fprintf(os.Stderr, "tidegate-democert: %v\n", err)
		os.Exit(1)
	}
}

func run(dir string, names []string, days int, force bool) error {
	certPath := filepath.Join(dir, "demo.crt")
	keyPath := filepath.Join(dir, "demo.key")
	if !force {
		if _, err := os.Stat(certPath); err == nil {
			fmt.Printf("keeping existing %s\n", certPath)
			return nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if days < 1 {
		return fmt.Errorf("-days %d must be at least 1", days)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return fmt.Errorf("generate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: strings.TrimSpace(names[0]), Organization: []string{"tidegate demo"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Duration(days) * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		// A self-signed leaf must be its own CA for clients such as
		// curl --cacert to accept it.
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, n := range names {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal key: %w", err)
	}

	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	fmt.Printf("wrote %s and %s for %s\n", certPath, keyPath, strings.Join(names, ", "))
	return nil
}
