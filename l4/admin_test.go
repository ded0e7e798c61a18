package l4

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// testMux registers both kinds of endpoint on one ServeMux, without the
// admin server's token check.
type testMux struct{ *http.ServeMux }

func (m testMux) HandleMutating(p string, h http.Handler) { m.Handle(p, h) }

func TestParseWeight(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    int
		wantErr bool
	}{
		{"zero drains", `{"weight": 0}`, 0, false},
		{"positive", `{"weight": 7}`, 7, false},
		{"max", `{"weight": 1000}`, 1000, false},
		{"too large", `{"weight": 1001}`, 0, true},
		{"negative", `{"weight": -1}`, 0, true},
		{"missing", `{}`, 0, true},
		{"unknown key", `{"weight": 1, "x": 2}`, 0, true},
		{"not a number", `{"weight": "1"}`, 0, true},
		{"fraction", `{"weight": 1.5}`, 0, true},
		{"two values", `{"weight": 1}{"weight": 2}`, 0, true},
		{"empty", ``, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseWeight([]byte(tc.body))
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseWeight(%q) error = %v, want error %v", tc.body, err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("parseWeight(%q) = %d, want %d", tc.body, got, tc.want)
			}
		})
	}
}

func FuzzParseWeight(f *testing.F) {
	for _, s := range []string{`{"weight": 0}`, `{"weight": 1000}`, `{"weight": -5}`, `{"weight": 1e3}`, `{`, `null`, `{"weight": null}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		w, err := parseWeight(body)
		if err == nil && (w < 0 || w > 1000) {
			t.Fatalf("parseWeight(%q) = %d without error, outside 0..1000", body, w)
		}
	})
}

func TestAdminEndpoints(t *testing.T) {
	b := newTestBalancer(t, l4Config(t, 2, ""))
	mux := testMux{http.NewServeMux()}
	registerAdmin(mux, b, discardLogger())
	srv := httptest.NewServer(mux)
	defer srv.Close()

	post := func(path, body string) *http.Response {
		t.Helper()
		resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := post("/vips/web/reals/127.0.0.2:8080/weight", `{"weight": 0}`); resp.StatusCode != http.StatusOK {
		t.Fatalf("POST weight: status %d, want 200", resp.StatusCode)
	}
	if resp := post("/vips/web/reals/127.0.0.9:8080/weight", `{"weight": 0}`); resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST weight of unknown real: status %d, want 404", resp.StatusCode)
	}
	if resp := post("/vips/nope/reals/127.0.0.2:8080/weight", `{"weight": 0}`); resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST weight on unknown vip: status %d, want 404", resp.StatusCode)
	}
	if resp := post("/vips/web/reals/127.0.0.2:8080/weight", `{"weight": -3}`); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("POST negative weight: status %d, want 400", resp.StatusCode)
	}

	resp, err := http.Get(srv.URL + "/vips")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var vips []vipStatus
	if err := json.NewDecoder(resp.Body).Decode(&vips); err != nil {
		t.Fatalf("decode GET /vips: %v", err)
	}
	if len(vips) != 1 || len(vips[0].Reals) != 2 {
		t.Fatalf("GET /vips = %+v, want one VIP with two reals", vips)
	}
	r := vips[0].Reals[1]
	if r.Address != "127.0.0.2:8080" || r.Weight != 0 || r.ConfigWeight != 1 || !r.Healthy {
		t.Errorf("GET /vips real = %+v, want 127.0.0.2:8080 weight 0, config weight 1, healthy", r)
	}
	if vips[0].UsableReals != 1 {
		t.Errorf("usable_reals = %d, want 1", vips[0].UsableReals)
	}
}
