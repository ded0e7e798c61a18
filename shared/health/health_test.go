package health

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestObserveRiseFall(t *testing.T) {
	c := New(Config{Rise: 2, Fall: 3}, true, nil, nil)
	fail := errors.New("refused")
	steps := []struct {
		err         error
		wantHealthy bool
		wantChange  bool
	}{
		{fail, true, false},
		{fail, true, false},
		{nil, true, false}, // a success resets the failure count
		{fail, true, false},
		{fail, true, false},
		{fail, false, true},
		{nil, false, false},
		{fail, false, false}, // a failure resets the success count
		{nil, false, false},
		{nil, true, true},
	}
	for i, s := range steps {
		_, changed := c.Observe(s.err)
		if changed != s.wantChange {
			t.Errorf("step %d: changed = %v, want %v", i, changed, s.wantChange)
		}
		if got := c.Healthy(); got != s.wantHealthy {
			t.Errorf("step %d: Healthy() = %v, want %v", i, got, s.wantHealthy)
		}
	}
}

func TestTCPProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := TCPProbe(addr)(context.Background()); err != nil {
		t.Errorf("probe of open listener: %v", err)
	}
	ln.Close()
	if err := TCPProbe(addr)(context.Background()); err == nil {
		t.Error("probe of closed listener succeeded")
	}
}

func TestHTTPProbeStatus(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	p := HTTPProbe{Address: srv.Listener.Addr().String(), Path: "/readyz", Expect: 200}.Probe()
	if err := p(context.Background()); err != nil {
		t.Errorf("probe with 200: %v", err)
	}
	status = http.StatusServiceUnavailable
	if err := p(context.Background()); err == nil {
		t.Error("probe with 503 succeeded")
	}
}
