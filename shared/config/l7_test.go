package config

import (
	"errors"
	"strings"
	"testing"
)

const l7Base = `
l7:
  listeners:
    - name: edge
      address: 127.0.0.1:8080
  routes:
    - name: all
      upstream: web
  upstreams:
    - name: web
      backends:
        - address: 127.0.0.1:9000
`

func TestL7Defaults(t *testing.T) {
	f, err := Parse([]byte(l7Base))
	if err != nil {
		t.Fatal(err)
	}
	u := f.L7.Upstreams[0]
	if u.Protocol != "http1" {
		t.Errorf("protocol default = %q, want http1", u.Protocol)
	}
	if u.Outlier.ConsecutiveFailures != DefaultOutlierFailures || u.Outlier.Cooldown != DefaultOutlierCooldown {
		t.Errorf("outlier defaults = %+v, want %d and %s", u.Outlier, DefaultOutlierFailures, DefaultOutlierCooldown)
	}
	if u.RetryBudget.Percent != DefaultRetryBudgetPercent || u.RetryBudget.MinConcurrency != DefaultRetryMinConcurrency {
		t.Errorf("retry budget defaults = %+v", u.RetryBudget)
	}
}

func TestL7UpstreamErrors(t *testing.T) {
	tests := []struct {
		name  string
		extra string // keys appended to upstreams[0]
		path  string
		msg   string
	}{
		{"bad protocol", "protocol: h3", "l7.upstreams[0].protocol", `"h3" is not one of http1, h2c`},
		{"h2c with tls", "protocol: h2c\n      tls: true", "l7.upstreams[0].protocol", "tls is set"},
		{"negative failures", "outlier:\n        consecutive_failures: -1", "l7.upstreams[0].outlier.consecutive_failures", "-1 is negative"},
		{"budget over 100", "retry_budget:\n        percent: 150", "l7.upstreams[0].retry_budget.percent", "150 is outside 0..100"},
		{"cooldown without unit", "outlier:\n        cooldown: 30", "l7.upstreams[0].outlier.cooldown", "has no unit"},
		{"unknown outlier key", "outlier:\n        failures: 3", "l7.upstreams[0].outlier.failures", "unknown key"},
		{"proxy header on checks", "health_check:\n        proxy_protocol: true", "l7.upstreams[0].health_check.proxy_protocol", "no PROXY header"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(l7Base + "      " + tc.extra + "\n"))
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Parse = %v, want Errors", err)
			}
			for _, e := range errs {
				if e.Path == tc.path && strings.Contains(e.Msg, tc.msg) {
					return
				}
			}
			t.Errorf("Parse errors = %v, want %s: ...%s...", errs, tc.path, tc.msg)
		})
	}
}

// FuzzParseL7 feeds L7 documents to Parse: it must return a file or
// Errors, never panic, and every error must name a key path.
func FuzzParseL7(f *testing.F) {
	f.Add(l7Base)
	f.Add(l7Base + "      protocol: h2c\n      outlier: {consecutive_failures: 2, cooldown: 1s}\n")
	f.Add(l7Base + "      retry_budget: {percent: 101}\n")
	f.Add("l7:\n  listeners: [{name: a, address: ':80', tls: {certificates: []}}]\n")
	f.Add("l7: {routes: [{name: r, upstream: x, match: {path_regex: '('}}]}\n")
	f.Fuzz(func(t *testing.T, doc string) {
		file, err := Parse([]byte(doc))
		if err == nil {
			if file == nil {
				t.Fatal("Parse returned neither a file nor an error")
			}
			return
		}
		var errs Errors
		if !errors.As(err, &errs) {
			t.Fatalf("Parse error %v is not Errors", err)
		}
		for _, e := range errs {
			if e.Path == "" {
				t.Fatalf("error without a key path: %v", e)
			}
		}
	})
}
