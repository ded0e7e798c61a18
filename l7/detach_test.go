package l7

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tidegate/tidegate/l7/upstream"
)

func TestDetachContextOwnState(t *testing.T) {
	rs := &requestState{id: "req-1", upstream: "app"}
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), requestStateKey{}, rs))
	parent = upstream.WithAttempt(parent, &rs.attempt)

	detached := DetachContext(parent)
	cancel()
	if err := detached.Err(); err != nil {
		t.Errorf("detached context error after the request's cancel = %v, want nil", err)
	}

	r := httptest.NewRequestWithContext(detached, "GET", "http://example.test/", nil)
	f := LogFields(r)
	if f == nil {
		t.Fatal("LogFields on a detached request = nil, want fields of its own")
	}
	f.Cache = "miss"
	if rs.policy.Cache != "" {
		t.Errorf("detached write changed the request's cache field to %q", rs.policy.Cache)
	}

	got := stateFrom(detached)
	if got == rs {
		t.Fatal("detached context shares the request state")
	}
	if got.id != "req-1" || got.upstream != "app" {
		t.Errorf("detached state id %q upstream %q, want req-1 and app", got.id, got.upstream)
	}
}

func TestDetachContextWithoutState(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	detached := DetachContext(ctx)
	if _, ok := detached.Deadline(); ok {
		t.Error("detached context kept the request's deadline")
	}
	if stateFrom(detached) != nil {
		t.Error("detached context without request state gained one")
	}
}
