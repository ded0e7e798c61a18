package topology

import (
	"crypto/tls"
	"crypto/x509"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/tidegate/tidegate/shared/config"
)

func TestL4FileParses(t *testing.T) {
	l7 := []netip.Addr{netip.MustParseAddr("10.99.2.11"), netip.MustParseAddr("10.99.2.12")}
	data, err := MarshalConfig(L4File("userspace", l7))
	if err != nil {
		t.Fatal(err)
	}
	f, err := config.Parse(data)
	if err != nil {
		t.Fatalf("Parse(generated L4 config) = %v\n%s", err, data)
	}
	if f.L4 == nil || len(f.L4.VIPs) != 2 {
		t.Fatalf("generated L4 config has VIPs %+v, want two", f.L4)
	}
	v := f.L4.VIPs[0]
	if v.Address != "10.99.10.1:443" {
		t.Errorf("VIP https address = %q, want 10.99.10.1:443", v.Address)
	}
	if len(v.Reals) != 2 || v.Reals[1].Address != "10.99.2.12:8443" {
		t.Errorf("VIP https reals = %+v, want the two L7 nodes on port 8443", v.Reals)
	}
	if v.Reals[0].HealthAddress != "10.99.2.11:9901" {
		t.Errorf("real health address = %q, want the L7 admin 10.99.2.11:9901", v.Reals[0].HealthAddress)
	}
	if strings.Contains(string(data), "null") {
		t.Errorf("generated config contains null values:\n%s", data)
	}
}

func TestL7FileParses(t *testing.T) {
	backends := []netip.Addr{netip.MustParseAddr("10.99.3.101")}
	certs := []L7Cert{{CertFile: "/a.crt", KeyFile: "/a.key"}, {CertFile: "/b.crt", KeyFile: "/b.key"}}
	data, err := MarshalConfig(L7File(certs, backends))
	if err != nil {
		t.Fatal(err)
	}
	f, err := config.Parse(data)
	if err != nil {
		t.Fatalf("Parse(generated L7 config) = %v\n%s", err, data)
	}
	if len(f.L7.Listeners) != 2 || f.L7.Listeners[0].TLS == nil {
		t.Fatalf("listeners = %+v, want a TLS listener first and a cleartext one", f.L7.Listeners)
	}
	if got := len(f.L7.Listeners[0].TLS.Certificates); got != 2 {
		t.Errorf("TLS listener has %d certificates, want 2", got)
	}
	if got := f.L7.Listeners[1].ProxyProtocol.Trusted; len(got) != 1 || got[0] != "10.99.2.0/24" {
		t.Errorf("proxy_protocol.trusted = %v, want [10.99.2.0/24]", got)
	}
	if f.ShutdownDelay.D() <= CheckInterval.D()*CheckFall {
		t.Errorf("shutdown_delay %s does not cover the L4 fall time %s", f.ShutdownDelay, CheckInterval.D()*CheckFall)
	}
}

func TestMarshalConfigRejectsInvalid(t *testing.T) {
	f := L4File("sideways", nil)
	_, err := MarshalConfig(f)
	if err == nil {
		t.Fatal("MarshalConfig(invalid) = nil error")
	}
	for _, want := range []string{"l4.dataplane.mode", "l4.vips[0].reals"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("MarshalConfig error %q does not name %s", err, want)
		}
	}
}

func TestMarshalConfigKeepsZeroWeight(t *testing.T) {
	f := L4File("userspace", []netip.Addr{netip.MustParseAddr("10.99.2.11")})
	zero := 0
	f.L4.VIPs[0].Reals[0].Weight = &zero
	data, err := MarshalConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	g, err := config.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if w := g.L4.VIPs[0].Reals[0].Weight; w == nil || *w != 0 {
		t.Errorf("weight after round trip = %v, want 0 (draining)", w)
	}
}

func TestCAIssue(t *testing.T) {
	ca, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile, err := ca.Issue(dir, "api", "api.tidegate.test", "10.99.10.1")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("LoadX509KeyPair: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"api.tidegate.test", "10.99.10.1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool, DNSName: name}); err != nil {
			t.Errorf("Verify(%s) = %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool, DNSName: "other.tidegate.test"}); err == nil {
		t.Error("Verify(other.tidegate.test) = nil, want a name mismatch")
	}
	info, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, want 0600", info.Mode().Perm())
	}
}

func TestMarshalConfigPatch(t *testing.T) {
	f := L7File(nil, []netip.Addr{netip.MustParseAddr("10.99.3.101")})
	f.L7.Routes = append(f.L7.Routes, config.Route{Name: "api", Upstream: "app"})
	data, err := MarshalConfig(f,
		Patch{Path: "l7.routes[1]", YAML: "match: {path_prefix: /api}"},
		Patch{Path: "admin", YAML: "address: 127.0.0.1:9999"},
	)
	if err != nil {
		t.Fatal(err)
	}
	g, err := config.Parse(data)
	if err != nil {
		t.Fatalf("Parse(patched) = %v\n%s", err, data)
	}
	if got := g.L7.Routes[1].Match.PathPrefix; got != "/api" {
		t.Errorf("routes[1].match.path_prefix = %q, want /api", got)
	}
	if got := g.Admin.Address; got != "127.0.0.1:9999" {
		t.Errorf("admin.address = %q, want 127.0.0.1:9999", got)
	}
}

func TestMarshalConfigPatchErrors(t *testing.T) {
	f := L7File(nil, []netip.Addr{netip.MustParseAddr("10.99.3.101")})
	tests := []struct {
		name  string
		patch Patch
		want  string
	}{
		{"index out of range", Patch{Path: "l7.routes[5]", YAML: "name: x"}, "has no item 5"},
		{"not a mapping", Patch{Path: "l7", YAML: "- a"}, "not a mapping"},
		{"bad index", Patch{Path: "l7.routes[x]", YAML: "name: x"}, "invalid path element"},
		{"unknown key", Patch{Path: "l7.routes[0]", YAML: "no_such_key: 1"}, "l7.routes[0].no_such_key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := MarshalConfig(f, tc.patch)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("MarshalConfig(%+v) = %v, want an error containing %q", tc.patch, err, tc.want)
			}
		})
	}
}
