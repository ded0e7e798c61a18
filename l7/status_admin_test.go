package l7

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidegate/tidegate/shared/admin"
	"github.com/tidegate/tidegate/shared/config"
	"github.com/tidegate/tidegate/shared/status"
)

func TestParseDrain(t *testing.T) {
	tests := []struct {
		body    string
		want    bool
		wantErr bool
	}{
		{`{"drain": true}`, true, false},
		{`{"drain": false}`, false, false},
		{`{}`, false, true},
		{`{"drain": "true"}`, false, true},
		{`{"drain": 1}`, false, true},
		{`{"drain": true, "x": 1}`, false, true},
		{`{"drain": true}{"drain": false}`, false, true},
		{`{"drain": null}`, false, true},
		{``, false, true},
	}
	for _, tc := range tests {
		got, err := parseDrain([]byte(tc.body))
		if (err != nil) != tc.wantErr {
			t.Errorf("parseDrain(%q) error = %v, want error %v", tc.body, err, tc.wantErr)
			continue
		}
		if got != tc.want {
			t.Errorf("parseDrain(%q) = %v, want %v", tc.body, got, tc.want)
		}
	}
}

func FuzzParseDrain(f *testing.F) {
	for _, s := range []string{`{"drain": true}`, `{"drain": false}`, `{}`, `{`, `null`, `[true]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		drain, err := parseDrain(body)
		if err != nil && drain {
			t.Fatalf("parseDrain(%q) returned true with error %v", body, err)
		}
	})
}

// drainTestServer is an L7 with one upstream of two real backends on
// 127.0.0.1, served through its admin listener and one HTTP listener.
type drainTestServer struct {
	s        *Server
	adm      *admin.Server
	admin    string
	listener string
	backends []string
	hits     []*atomic.Int64
	config   string
}

func newDrainTestServer(t *testing.T, token string) *drainTestServer {
	t.Helper()
	d := &drainTestServer{}
	for i := range 2 {
		n := new(atomic.Int64)
		d.hits = append(d.hits, n)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			fmt.Fprintf(w, "backend %d\n", i)
		}))
		t.Cleanup(srv.Close)
		d.backends = append(d.backends, strings.TrimPrefix(srv.URL, "http://"))
	}
	d.config = fmt.Sprintf(`
admin: {token: %q}
l7:
  access_log: {path: %q}
  listeners:
    - {name: web, address: 127.0.0.1:0}
  routes:
    - {name: all, match: {path_prefix: /}, upstream: pool}
  upstreams:
    - name: pool
      backends:
        - address: %s
        - address: %s
`, token, filepath.Join(t.TempDir(), "access.log"), d.backends[0], d.backends[1])
	f, err := config.Parse([]byte(d.config))
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	adm := admin.New(token, false, logger)
	d.adm = adm
	d.s, err = New(f, logger, adm)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.s.Drain(t.Context()) })
	d.listener = d.s.Addrs()["web"].String()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d.admin = ln.Addr().String()
	ln.Close()
	if err := adm.Listen(d.admin); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = adm.Shutdown(t.Context()) })
	return d
}

func (d *drainTestServer) post(t *testing.T, upstream, backend, body, token string) *http.Response {
	t.Helper()
	url := fmt.Sprintf("http://%s/upstreams/%s/backends/%s/drain", d.admin, upstream, backend)
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func (d *drainTestServer) get(t *testing.T, n int) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for i := range n {
		resp, err := client.Get(fmt.Sprintf("http://%s/r/%d", d.listener, i))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %s", i, resp.Status)
		}
	}
}

func (d *drainTestServer) backendState(t *testing.T, addr string) string {
	t.Helper()
	c := &statusCollector{s: d.s}
	empty := status.Window{Cur: status.NewSample(nil, time.Now())}
	for _, u := range c.upstreamsIn(d.s.state.Load(), empty) {
		for _, b := range u.Backends {
			if b.Address == addr {
				return b.State
			}
		}
	}
	t.Fatalf("backend %s not in the status", addr)
	return ""
}

func TestDrainEndpointStopsRequests(t *testing.T) {
	const token = "drain-token"
	d := newDrainTestServer(t, token)
	drained, other := d.backends[0], d.backends[1]

	if resp := d.post(t, "pool", drained, `{"drain": true}`, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("drain without the token: status %d, want 401", resp.StatusCode)
	}
	if got := d.backendState(t, drained); got != status.StateUp {
		t.Fatalf("state after a refused drain = %q, want up", got)
	}

	if resp := d.post(t, "pool", drained, `{"drain": true}`, token); resp.StatusCode != http.StatusOK {
		t.Fatalf("drain: status %d, want 200", resp.StatusCode)
	}
	if got := d.backendState(t, drained); got != status.StateDraining {
		t.Errorf("state after drain = %q, want draining", got)
	}
	before0, before1 := d.hits[0].Load(), d.hits[1].Load()
	d.get(t, 20)
	if got := d.hits[0].Load() - before0; got != 0 {
		t.Errorf("drained backend got %d of 20 requests, want 0", got)
	}
	if got := d.hits[1].Load() - before1; got != 20 {
		t.Errorf("backend %s got %d of 20 requests, want 20", other, got)
	}

	// A reload with the same configuration keeps the drain.
	f, err := config.Parse([]byte(d.config))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.s.Reload(f); err != nil {
		t.Fatal(err)
	}
	if got := d.backendState(t, drained); got != status.StateDraining {
		t.Errorf("state after reload = %q, want draining", got)
	}

	if resp := d.post(t, "pool", drained, `{"drain": false}`, token); resp.StatusCode != http.StatusOK {
		t.Fatalf("undrain: status %d, want 200", resp.StatusCode)
	}
	if got := d.backendState(t, drained); got != status.StateUp {
		t.Errorf("state after undrain = %q, want up", got)
	}
	before0 = d.hits[0].Load()
	d.get(t, 20)
	if got := d.hits[0].Load() - before0; got == 0 {
		t.Errorf("undrained backend got none of 20 round-robin requests")
	}
}

func TestDrainEndpointErrors(t *testing.T) {
	d := newDrainTestServer(t, "")
	tests := []struct {
		name     string
		upstream string
		backend  string
		body     string
		want     int
	}{
		{"unknown upstream", "nope", d.backends[0], `{"drain": true}`, http.StatusNotFound},
		{"unknown backend", "pool", "127.0.0.1:1", `{"drain": true}`, http.StatusNotFound},
		{"bad body", "pool", d.backends[0], `{"drain": "yes"}`, http.StatusBadRequest},
		{"empty body", "pool", d.backends[0], ``, http.StatusBadRequest},
	}
	for _, tc := range tests {
		if resp := d.post(t, tc.upstream, tc.backend, tc.body, ""); resp.StatusCode != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}
	if got := d.backendState(t, d.backends[0]); got != status.StateUp {
		t.Errorf("state after rejected requests = %q, want up", got)
	}
}

func TestBackendMetricsPerBackend(t *testing.T) {
	d := newDrainTestServer(t, "")
	c := &statusCollector{s: d.s, sampler: status.NewSampler(d.adm.Registry)}
	if _, err := c.collect(); err != nil {
		t.Fatal(err)
	}
	d.get(t, 10)
	doc, err := c.collect()
	if err != nil {
		t.Fatal(err)
	}

	var served float64
	for _, b := range doc.L7.Upstreams[0].Backends {
		if b.RequestRate == nil || *b.RequestRate == 0 {
			t.Errorf("backend %s: request rate %v, want above 0 after round-robin requests", b.Address, b.RequestRate)
			continue
		}
		served += *b.RequestRate * doc.RateWindowSeconds
		if b.ErrorRatio == nil || *b.ErrorRatio != 0 {
			t.Errorf("backend %s: error ratio %v, want 0", b.Address, b.ErrorRatio)
		}
		if b.LatencyP50 == nil || b.LatencyP99 == nil {
			t.Errorf("backend %s: latency p50 %v p99 %v, want both", b.Address, b.LatencyP50, b.LatencyP99)
		}
	}
	if served < 9.99 || served > 10.01 {
		t.Errorf("backends served %v requests in the window, want 10", served)
	}

	// A reload that removes a backend removes its series.
	f, err := config.Parse([]byte(strings.Replace(d.config, "        - address: "+d.backends[1]+"\n", "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.s.Reload(f); err != nil {
		t.Fatal(err)
	}
	families, err := d.adm.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if !strings.HasPrefix(mf.GetName(), "tidegate_l7_backend_request") {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "backend" && lp.GetValue() == d.backends[1] {
					t.Errorf("%s still has a series for the removed backend %s", mf.GetName(), d.backends[1])
				}
			}
		}
	}
}
