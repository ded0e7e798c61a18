package status

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func ptr(v float64) *float64 { return &v }

// sampleL4 is an L4 document with one real up, one down and one draining.
func sampleL4() *Document {
	return &Document{
		Tier:              "l4",
		Generated:         time.Date(2026, 12, 4, 16, 0, 0, 0, time.UTC),
		RateWindowSeconds: 2,
		L4: &L4{
			Engine: "userspace",
			VIPs: []VIP{{
				Name: "https", Address: "127.0.0.1:8443", Engine: "userspace", ProxyProtocol: "v2",
				UsableReals: 1, ActiveConnections: 3, AcceptRate: ptr(12.5),
				Rejected: map[string]float64{"no_real": 2},
				Reals: []Real{
					{Address: "127.0.0.1:9001", State: StateUp, Healthy: true, Weight: 1, ConfigWeight: 1, ActiveConnections: 3, ConnectionRate: ptr(12.5), BytesIn: 2048},
					{Address: "127.0.0.1:9002", State: StateDown, Weight: 1, ConfigWeight: 1, LastError: "dial tcp: connection refused"},
					{Address: "127.0.0.1:9003", State: StateDraining, Healthy: true, Weight: 0, ConfigWeight: 5},
				},
			}},
			XDP: []Counter{},
		},
	}
}

func sampleL7() *Document {
	return &Document{
		Tier:      "l7",
		Generated: time.Date(2026, 12, 4, 16, 0, 0, 0, time.UTC),
		L7: &L7{
			Listeners: []Listener{{Name: "https", Address: "127.0.0.1:8443", TLS: true, ActiveConnections: 1}},
			Routes:    []Route{{Name: "all", Match: "prefix /", Upstream: "echo", Requests: 10, RequestRate: ptr(5), ErrorRatio: ptr(0.1)}},
			Upstreams: []Upstream{{
				Name: "echo", Balance: "round_robin", RequestRate: ptr(5), LatencyP50: ptr(0.0021), LatencyP99: ptr(0.5),
				Backends: []Backend{
					{Address: "127.0.0.1:7001", State: StateUp, Healthy: true, Weight: 1, RequestRate: ptr(3), ErrorRatio: ptr(0.25), LatencyP50: ptr(0.004), LatencyP99: ptr(1.5)},
					{Address: "127.0.0.1:7002", State: StateEjected, Healthy: true, Ejected: true, Weight: 1, Ejections: 1},
					{Address: "127.0.0.1:7003", State: StateDraining, Healthy: true, Draining: true, Weight: 1},
				},
			}},
			Cache:     []Counter{{Name: "tidegate_l7_cache_hits_total", Value: 4, Rate: ptr(1)}},
			RateLimit: []Counter{},
		},
	}
}

func serve(t *testing.T, collect Collector, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	mux := http.NewServeMux()
	Register(mux, collect, slog.New(slog.NewTextHandler(io.Discard, nil)))
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec
}

func fixed(d *Document) Collector { return func() (*Document, error) { return d, nil } }

func TestPageShowsStates(t *testing.T) {
	rec := serve(t, fixed(sampleL4()), http.MethodGet, "/status")
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	body := rec.Body.String()
	for _, want := range []string{
		`<tr class="row-down" data-real="127.0.0.1:9002">`,
		`<tr class="row-draining" data-real="127.0.0.1:9003">`,
		`<span class="badge badge-down">down</span>`,
		`dial tcp: connection refused`,
		`<strong>1 down:</strong>`,
		`<strong>1 draining:</strong>`,
		`https / 127.0.0.1:9003`,
		`data-action="weight" data-vip="https" data-real="127.0.0.1:9001" data-weight="0">Drain</button>`,
		// Undrain restores the configured weight.
		`data-action="weight" data-vip="https" data-real="127.0.0.1:9003" data-weight="5">Undrain</button>`,
		`rejected no_real <b>2</b>`,
		`12.5/s`,
		`2.0 KiB`,
		`No XDP engine is running`,
		`rates over the last 2.0s`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

func TestPageL7Sections(t *testing.T) {
	rec := serve(t, fixed(sampleL7()), http.MethodGet, "/status")
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	body := rec.Body.String()
	for _, want := range []string{
		`<tr class="row-ejected" data-backend="127.0.0.1:7002">`,
		`echo / 127.0.0.1:7002 (ejected)`,
		`p50 <b>2.1ms</b>`,
		`p99 <b>500.0ms</b>`,
		`p90 <b>–</b>`,
		`<td class="num">3/s</td><td class="num">25.0%</td><td class="num wide">4.0ms</td><td class="num">1.50s</td>`,
		`10.0%`,
		`tidegate_l7_cache_hits_total`,
		`No rate-limit figures`,
		`rates appear from the next refresh`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	// Backends in rotation get a Drain button and drained ones Undrain.
	for _, want := range []string{
		`data-action="drain" data-upstream="echo" data-backend="127.0.0.1:7001" data-drain="true">Drain</button>`,
		`data-action="drain" data-upstream="echo" data-backend="127.0.0.1:7003" data-drain="false">Undrain</button>`,
		`<tr class="row-draining" data-backend="127.0.0.1:7003">`,
		`id="token-form"`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

func TestPageEscapesNames(t *testing.T) {
	d := sampleL4()
	d.L4.VIPs[0].Name = `<script>alert(1)</script>`
	d.L4.VIPs[0].Reals[1].LastError = `"><img src=x onerror=alert(1)>`
	body := serve(t, fixed(d), http.MethodGet, "/status").Body.String()
	if strings.Contains(body, "<script>alert(1)") || strings.Contains(body, "<img src=x") {
		t.Errorf("page contains unescaped markup from names:\n%s", body)
	}
}

func TestPageSecurityHeaders(t *testing.T) {
	for _, path := range []string{"/status", "/status.json", "/status/assets/status.js"} {
		rec := serve(t, fixed(sampleL4()), http.MethodGet, path)
		if rec.Code != http.StatusOK {
			t.Errorf("GET %s: status %d", path, rec.Code)
			continue
		}
		csp := rec.Header().Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("GET %s: Content-Security-Policy %q lacks default-src 'none' or frame-ancestors 'none'", path, csp)
		}
		if got := rec.Header().Get("X-Frame-Options"); got != "DENY" {
			t.Errorf("GET %s: X-Frame-Options %q, want DENY", path, got)
		}
	}
}

func TestPageLoadsOnlyEmbeddedAssets(t *testing.T) {
	body := serve(t, fixed(sampleL4()), http.MethodGet, "/status").Body.String()
	for _, bad := range []string{"http://", "https://", "//cdn", "@import"} {
		if strings.Contains(body, bad) {
			t.Errorf("page refers to %q, want only its own assets", bad)
		}
	}
	for _, asset := range []string{"/status/assets/status.css", "/status/assets/status.js"} {
		if !strings.Contains(body, asset) {
			t.Errorf("page does not load %s", asset)
		}
		rec := serve(t, fixed(sampleL4()), http.MethodGet, asset)
		if rec.Code != http.StatusOK || rec.Body.Len() == 0 {
			t.Errorf("GET %s: status %d, %d bytes", asset, rec.Code, rec.Body.Len())
		}
	}
}

func TestStatusJSONRoundTrip(t *testing.T) {
	rec := serve(t, fixed(sampleL4()), http.MethodGet, "/status.json")
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	d, err := Parse(rec.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if got := len(d.Problems()); got != 1 {
		t.Errorf("parsed document has %d problems, want 1", got)
	}
	if r := d.L4.VIPs[0].Reals[0]; r.ConnectionRate == nil || *r.ConnectionRate != 12.5 {
		t.Errorf("connection rate after round trip = %v, want 12.5", r.ConnectionRate)
	}
	if r := d.L4.VIPs[0].Reals[1]; r.ConnectionRate != nil {
		t.Errorf("absent rate came back as %v, want nil", *r.ConnectionRate)
	}
}

func TestStatusCollectError(t *testing.T) {
	failing := func() (*Document, error) { return nil, errors.New("gather metrics: boom") }
	for _, path := range []string{"/status", "/status.json"} {
		rec := serve(t, failing, http.MethodGet, path)
		if rec.Code != http.StatusInternalServerError {
			t.Errorf("GET %s with a failing collector: status %d, want 500", path, rec.Code)
		}
	}
}

func TestStatusRejectsPost(t *testing.T) {
	rec := serve(t, fixed(sampleL4()), http.MethodPost, "/status")
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /status: status %d, want 405", rec.Code)
	}
}

func TestProblemsIgnoresDraining(t *testing.T) {
	got := sampleL4().Problems()
	if len(got) != 1 {
		t.Fatalf("problems = %+v, want one", got)
	}
	if got[0] != (Problem{Group: "https", Address: "127.0.0.1:9002", State: StateDown}) {
		t.Errorf("problem = %+v, want the down real", got[0])
	}
}

func TestParseRejects(t *testing.T) {
	cases := map[string]string{
		"not json":      `{`,
		"two values":    `{"tier":"l4","l4":{}} {}`,
		"unknown tier":  `{"tier":"l5","l4":{}}`,
		"both sections": `{"tier":"l4","l4":{},"l7":{}}`,
		"wrong section": `{"tier":"l7","l4":{}}`,
		"no section":    `{"tier":"l4"}`,
	}
	for name, in := range cases {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("%s: Parse(%q) succeeded, want an error", name, in)
		}
	}
}

func TestWriteTable(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteTable(&buf, sampleL4()); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"127.0.0.1:9002", "DOWN", "DRAINING", "dial tcp: connection refused", "DOWN: https 127.0.0.1:9002"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}

	buf.Reset()
	if err := WriteTable(&buf, sampleL7()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"127.0.0.1:7002", "EJECTED", "round_robin", "prefix /", "tidegate_l7_cache_hits_total"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("L7 table lacks %q:\n%s", want, buf.String())
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, d := range []*Document{sampleL4(), sampleL7()} {
		seed, err := json.Marshal(d)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(seed)
	}
	f.Add([]byte(`{"tier":"l4","l4":{"vips":[{"reals":[{"state":"down"}]}]}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := Parse(data)
		if err != nil {
			return
		}
		// Whatever parses must print and list its problems without panicking.
		_ = d.Problems()
		if err := WriteTable(io.Discard, d); err != nil {
			t.Fatalf("WriteTable: %v", err)
		}
	})
}
