package l7

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/tidegate/tidegate/l7/upstream"
)

// Admin endpoint registered with the status page:
//
//	POST /upstreams/{upstream}/backends/{backend}/drain   body {"drain": true}
//	     Drains a backend at run time (no new requests, requests in flight
//	     finish), or with false puts it back. {backend} is the address as
//	     configured, with an IPv6 address written as %5B2001:db8::1%5D:8080.
//	     A reload keeps the drain of a backend whose upstream and address
//	     stay. Returns the backend's new status, 400 for a bad body, 404 for
//	     an unknown upstream or backend. When admin.token is set the request
//	     needs it as a bearer token.

// drainRequest is the body of the drain endpoint.
type drainRequest struct {
	Drain *bool `json:"drain"`
}

// maxDrainBody bounds the request body; a valid one is a few bytes.
const maxDrainBody = 4 << 10

// parseDrain decodes a drain request body: a JSON object with one boolean
// "drain" and nothing else.
func parseDrain(body []byte) (bool, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var req drainRequest
	if err := dec.Decode(&req); err != nil {
		return false, fmt.Errorf("invalid body (want {\"drain\": true} or {\"drain\": false}): %w", err)
	}
	if dec.More() {
		return false, errors.New("invalid body: more than one JSON value")
	}
	if req.Drain == nil {
		return false, errors.New("invalid body: missing \"drain\"")
	}
	return *req.Drain, nil
}

// mutatingMux is the part of the admin server that registers endpoints
// which change state.
type mutatingMux interface {
	HandleMutating(pattern string, h http.Handler)
}

func registerDrain(mux mutatingMux, s *Server, logger *slog.Logger) {
	mux.HandleMutating("POST /upstreams/{upstream}/backends/{backend}/drain", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, addr := r.PathValue("upstream"), r.PathValue("backend")
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxDrainBody))
		if err != nil {
			http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
			return
		}
		drain, err := parseDrain(body)
		if err != nil {
			logger.Warn("admin drain request rejected", "upstream", name, "backend", addr, "err", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		st := s.state.Load()
		pool := st.pools[name]
		if pool == nil {
			http.Error(w, fmt.Sprintf("upstream %q not found", name), http.StatusNotFound)
			return
		}
		if err := pool.SetDraining(addr, drain); err != nil {
			status := http.StatusBadRequest
			if errors.Is(err, upstream.ErrBackendNotFound) {
				status = http.StatusNotFound
			}
			http.Error(w, err.Error(), status)
			return
		}
		for i, bs := range pool.Stats() {
			if bs.Addr == addr {
				out := backendStatus(bs, pool.Backends()[i].Weight)
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(out)
				return
			}
		}
		http.Error(w, fmt.Sprintf("backend %q not found", addr), http.StatusNotFound)
	}))
}
