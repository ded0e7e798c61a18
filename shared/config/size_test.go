package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// manyRoutes returns an l7 document with n routes and no aliases.
func manyRoutes(n int) []byte {
	var b strings.Builder
	b.WriteString("l7:\n  listeners:\n    - name: x\n      address: 127.0.0.1:80\n")
	b.WriteString("  upstreams:\n    - name: web\n      backends: [{address: 127.0.0.1:81}]\n")
	b.WriteString("  routes:\n")
	for i := range n {
		fmt.Fprintf(&b, "    - name: r%d\n      upstream: web\n", i)
	}
	return []byte(b.String())
}

func TestParseOversizedDocument(t *testing.T) {
	// Each route is three nodes (the mapping and two values), so half of
	// maxSteps routes pass the limit.
	_, err := Parse(manyRoutes(maxSteps / 2))
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Parse: %v, want Errors", err)
	}
	// Validation of the part left undecoded would only add noise: one
	// error per route that was never read.
	if len(errs) != 1 {
		t.Errorf("got %d errors, want 1 for the size limit", len(errs))
	}
	if strings.Contains(errs[0].Msg, "alias") {
		t.Errorf("message %q blames aliases in a document that has none", errs[0].Msg)
	}
}

func TestErrorsMessageBounded(t *testing.T) {
	var errs Errors
	for i := range 1000 {
		errs.add(fmt.Sprintf("l7.routes[%d].upstream", i), "is missing")
	}
	msg := errs.Error()
	if lines := strings.Count(msg, "\n") + 1; lines > maxErrorLines+2 {
		t.Errorf("Error() has %d lines, want at most %d", lines, maxErrorLines+2)
	}
	if !strings.HasPrefix(msg, "1000 configuration error(s)") {
		t.Errorf("Error() = %.60q..., want the full count first", msg)
	}
	if !strings.Contains(msg, "980 more") {
		t.Errorf("Error() does not say how many errors it left out: %.200q", msg[len(msg)-200:])
	}
}
