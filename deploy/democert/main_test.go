package main

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
)

func TestRunWritesUsableCertificate(t *testing.T) {
	dir := t.TempDir()
	if err := run(dir, []string{"localhost", "127.0.0.1"}, 1, false); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "demo.crt"), filepath.Join(dir, "demo.key"))
	if err != nil {
		t.Fatalf("LoadX509KeyPair: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	for _, name := range []string{"localhost", "127.0.0.1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
			t.Errorf("Verify(%s) = %v", name, err)
		}
	}
	info, err := os.Stat(filepath.Join(dir, "demo.key"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("key mode = %v, want 0600", info.Mode().Perm())
	}
}

func TestRunKeepsExistingCertificate(t *testing.T) {
	dir := t.TempDir()
	if err := run(dir, []string{"localhost"}, 1, false); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(filepath.Join(dir, "demo.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := run(dir, []string{"localhost"}, 1, false); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(filepath.Join(dir, "demo.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if string(before) != string(after) {
		t.Error("second run replaced the certificate without -force")
	}
}

func TestRunRejectsZeroDays(t *testing.T) {
	if err := run(t.TempDir(), []string{"localhost"}, 0, false); err == nil {
		t.Error("run with -days 0 = nil error, want an error")
	}
}
