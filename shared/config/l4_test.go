package config

import (
	"errors"
	"strings"
	"testing"
)

const validL4 = `
l4:
  vips:
    - name: web
      address: 192.0.2.1:443
      reals:
        - address: 10.0.0.1:8443
        - address: 10.0.0.2:8443
          weight: 0
`

func TestParseL4Defaults(t *testing.T) {
	f, err := Parse([]byte(validL4))
	if err != nil {
		t.Fatal(err)
	}
	v := f.L4.VIPs[0]
	if v.ProxyProtocol != "v2" || v.Affinity != "none" || v.TableSize != DefaultTableSize ||
		v.ConnectTimeout != DefaultConnectTimeout || v.IdleTimeout != DefaultIdleTimeout || v.DialAttempts != DefaultDialAttempts {
		t.Errorf("defaults not applied: %+v", v)
	}
	if v.TCPKeepAlive != 0 {
		t.Errorf("unset tcp_keepalive = %s, want 0s (off)", v.TCPKeepAlive)
	}
	if f.L4.Dataplane.Mode != "userspace" {
		t.Errorf("dataplane.mode = %q, want userspace", f.L4.Dataplane.Mode)
	}
	if w := v.Reals[0].RealWeight(); w != 1 {
		t.Errorf("unset weight = %d, want 1", w)
	}
	if w := v.Reals[1].RealWeight(); w != 0 {
		t.Errorf("weight 0 read as %d", w)
	}
}

func TestParseL4Errors(t *testing.T) {
	tests := []struct {
		name     string
		vipExtra string
		realLine string
		wantPath string
		wantMsg  string
	}{
		{"table size not prime", "table_size: 65536", "", "l4.vips[0].table_size", "not a prime"},
		{"table size below reals", "table_size: 2", "", "l4.vips[0].table_size", "smaller than the number of reals"},
		{"weight too large", "", "weight: 1001", "l4.vips[0].reals[0].weight", "outside 0..1000"},
		{"negative weight", "", "weight: -1", "l4.vips[0].reals[0].weight", "outside 0..1000"},
		{"bad proxy version", "proxy_protocol: v3", "", "l4.vips[0].proxy_protocol", "not one of v1, v2"},
		{"bad affinity", "affinity: source", "", "l4.vips[0].affinity", "not one of none, client"},
		{"negative cap", "max_connections: -1", "", "l4.vips[0].max_connections", "negative"},
		{"bad health type", "health_check: {type: udp}", "", "l4.vips[0].health_check.type", "not one of tcp, http"},
		{"timeout over interval", "health_check: {interval: 1s, timeout: 2s}", "", "l4.vips[0].health_check.timeout", "longer than the interval"},
		{"duration without unit", "connect_timeout: 5", "", "l4.vips[0].connect_timeout", "no unit"},
		{"unknown key", "tabel_size: 13", "", "l4.vips[0].tabel_size", ""},
		{"bad health address", "", "health_address: nope", "l4.vips[0].reals[0].health_address", ""},
		{"keep-alive under 1s", "tcp_keepalive: 500ms", "", "l4.vips[0].tcp_keepalive", "outside 1s..9h6m7s"},
		{"keep-alive over kernel max", "tcp_keepalive: 10h", "", "l4.vips[0].tcp_keepalive", "outside 1s..9h6m7s"},
		{"negative keep-alive", "tcp_keepalive: -1s", "", "l4.vips[0].tcp_keepalive", "negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := "l4:\n  vips:\n    - name: web\n      address: 192.0.2.1:443\n"
			if tc.vipExtra != "" {
				doc += "      " + tc.vipExtra + "\n"
			}
			doc += "      reals:\n        - address: 10.0.0.1:8443\n"
			if tc.realLine != "" {
				doc += "          " + tc.realLine + "\n"
			}
			doc += "        - address: 10.0.0.2:8443\n        - address: 10.0.0.3:8443\n"
			_, err := Parse([]byte(doc))
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Parse error = %v, want Errors", err)
			}
			for _, e := range errs {
				if e.Path == tc.wantPath && strings.Contains(e.Msg, tc.wantMsg) {
					return
				}
			}
			t.Errorf("Parse errors = %v, want one at %s containing %q", errs, tc.wantPath, tc.wantMsg)
		})
	}
}

func TestParseL4TCPKeepAlive(t *testing.T) {
	doc := strings.Replace(validL4, "      reals:", "      tcp_keepalive: 45s\n      reals:", 1)
	f, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.L4.VIPs[0].TCPKeepAlive; got != Duration(45e9) {
		t.Errorf("tcp_keepalive = %s, want 45s", got)
	}
}

func TestParseL4DuplicateReal(t *testing.T) {
	doc := strings.Replace(validL4, "10.0.0.2:8443", "10.0.0.1:8443", 1)
	_, err := Parse([]byte(doc))
	if err == nil || !strings.Contains(err.Error(), "l4.vips[0].reals[1].address") {
		t.Errorf("Parse with a duplicate real = %v, want an error at l4.vips[0].reals[1].address", err)
	}
}

// FuzzParseL4 feeds arbitrary documents to the parser: it must never panic,
// and a document it accepts must validate again unchanged.
func FuzzParseL4(f *testing.F) {
	f.Add([]byte(validL4))
	f.Add([]byte("l4:\n  vips:\n    - name: a\n      address: '[::1]:80'\n      affinity: client\n      reals: [{address: '[::1]:81', weight: 3}]\n"))
	f.Add([]byte("l4:\n  dataplane: {mode: auto}\n  vips: [{name: a, address: ':80', table_size: 13, reals: [{address: 'x:1'}]}]\n"))
	f.Add([]byte("l4:\n  vips:\n    - name: a\n      health_check: {type: http, path: x, rise: 0}\n"))
	f.Add([]byte("l4: {vips: [{reals: [{weight: 99999999999999999999}]}]}"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		cfg, err := Parse(doc)
		if err != nil {
			if len(err.Error()) == 0 {
				t.Fatal("empty error message")
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("accepted config fails Validate: %v", err)
		}
	})
}
