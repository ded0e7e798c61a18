package config

import (
	"errors"
	"testing"
)

// Listener and route names label metrics, the status page and the
// per-listener settings looked up at request time (trusted forwarders), so
// two entries with one name would share or swap them.
func TestL7DuplicateNames(t *testing.T) {
	doc := `
l7:
  listeners:
    - {name: edge, address: "127.0.0.1:1"}
    - {name: edge, address: "127.0.0.1:2", trusted_forwarders: ["10.0.0.0/8"]}
  routes:
    - {name: r, upstream: u}
    - {name: r, upstream: u}
  upstreams:
    - {name: u, backends: [{address: "127.0.0.1:3"}]}
`
	_, err := Parse([]byte(doc))
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Parse: %v, want Errors", err)
	}
	want := map[string]bool{"l7.listeners[1].name": false, "l7.routes[1].name": false}
	for _, e := range errs {
		if _, ok := want[e.Path]; ok {
			want[e.Path] = true
		}
	}
	for path, found := range want {
		if !found {
			t.Errorf("no error at %s, got %v", path, errs)
		}
	}
}
