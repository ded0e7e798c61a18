package l4

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/tidegate/tidegate/shared/config"
)

// Admin endpoints, registered on the admin listener by [New]:
//
//	GET  /vips
//	     Lists every VIP with its reals as JSON (see vipStatus).
//	POST /vips/{vip}/reals/{real}/weight   body {"weight": N}
//	     Sets a real's weight at run time. Weight 0 drains it: no new
//	     connections, and open ones stay. {real} is the real's address as configured, with
//	     an IPv6 address written as %5B2001:db8::1%5D:8443. Returns the
//	     real's new status, 400 for a bad body, 404 for an unknown VIP or
//	     real. When admin.token is set the request needs it as a bearer
//	     token.

// vipStatus is one VIP in the GET /vips response.
type vipStatus struct {
	Name          string       `json:"name"`
	Address       string       `json:"address"`
	ProxyProtocol string       `json:"proxy_protocol"`
	Affinity      string       `json:"affinity"`
	TableVersion  uint64       `json:"table_version"`
	UsableReals   int          `json:"usable_reals"`
	Reals         []realStatus `json:"reals"`
}

type realStatus struct {
	Address      string `json:"address"`
	Weight       int    `json:"weight"`
	ConfigWeight int    `json:"config_weight"`
	Healthy      bool   `json:"healthy"`
	HealthCheck  bool   `json:"health_checked"`
	LastError    string `json:"last_error,omitempty"`
}

func statusOf(v *VIP) vipStatus {
	cfg := v.Config()
	s := v.Snapshot()
	out := vipStatus{
		Name:          v.Name,
		Address:       cfg.Address,
		ProxyProtocol: cfg.ProxyProtocol,
		Affinity:      cfg.Affinity,
		TableVersion:  s.Version,
		UsableReals:   s.Usable,
		Reals:         []realStatus{},
	}
	v.mu.Lock()
	for _, r := range v.reals {
		out.Reals = append(out.Reals, realStatus{
			Address:      r.Address,
			Weight:       r.Weight(),
			ConfigWeight: r.configWeight,
			Healthy:      r.Healthy(),
			HealthCheck:  cfg.HealthCheck != nil,
			LastError:    r.LastError(),
		})
	}
	v.mu.Unlock()
	return out
}

// weightRequest is the body of POST /vips/{vip}/reals/{real}/weight.
type weightRequest struct {
	Weight *int `json:"weight"`
}

// parseWeight decodes a weight request body: a JSON object with one integer
// "weight" in 0..config.MaxRealWeight and nothing else.
func parseWeight(body []byte) (int, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var req weightRequest
	if err := dec.Decode(&req); err != nil {
		return 0, fmt.Errorf("invalid body (want {\"weight\": N}): %w", err)
	}
	if dec.More() {
		return 0, errors.New("invalid body: more than one JSON value")
	}
	if req.Weight == nil {
		return 0, errors.New("invalid body: missing \"weight\"")
	}
	if w := *req.Weight; w < 0 || w > config.MaxRealWeight {
		return 0, fmt.Errorf("weight %d is outside 0..%d", w, config.MaxRealWeight)
	}
	return *req.Weight, nil
}

// maxWeightBody bounds the request body, because a valid one is a few bytes.
const maxWeightBody = 4 << 10

func registerAdmin(mux interface {
	Handle(string, http.Handler)
	HandleMutating(string, http.Handler)
}, b *Balancer, logger *slog.Logger) {
	mux.Handle("GET /vips", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out := []vipStatus{}
		for _, v := range b.VIPs() {
			out = append(out, statusOf(v))
		}
		writeJSON(w, http.StatusOK, out)
	}))

	mux.HandleMutating("POST /vips/{vip}/reals/{real}/weight", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		vipName, realAddr := r.PathValue("vip"), r.PathValue("real")
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWeightBody))
		if err != nil {
			http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
			return
		}
		weight, err := parseWeight(body)
		if err != nil {
			logger.Warn("admin weight request rejected", "vip", vipName, "real", realAddr, "err", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		v := b.VIP(vipName)
		if v == nil {
			http.Error(w, fmt.Sprintf("vip %q not found", vipName), http.StatusNotFound)
			return
		}
		if err := v.SetWeight(realAddr, weight); err != nil {
			status := http.StatusBadRequest
			if errors.Is(err, ErrRealNotFound) {
				status = http.StatusNotFound
			}
			http.Error(w, err.Error(), status)
			return
		}
		for _, rs := range statusOf(v).Reals {
			if rs.Address == realAddr {
				writeJSON(w, http.StatusOK, rs)
				return
			}
		}
		// The real was removed by a reload between the two calls.
		http.Error(w, fmt.Sprintf("real %q not found", realAddr), http.StatusNotFound)
	}))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
