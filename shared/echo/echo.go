// Package echo is a small HTTP backend for demos and tests. It answers every
// request with a JSON description of what it received, including the
// forwarding headers a proxy added, and counts requests by path.
package echo

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
)

// Request is what the backend reports about one request.
type Request struct {
	Backend    string              `json:"backend"`
	Method     string              `json:"method"`
	Host       string              `json:"host"`
	URI        string              `json:"uri"`
	Proto      string              `json:"proto"`
	RemoteAddr string              `json:"remote_addr"`
	Headers    map[string][]string `json:"headers"`
	BodyBytes  int64               `json:"body_bytes"`
}

// Handler echoes requests. Name identifies the backend in responses.
type Handler struct {
	Name  string
	count atomic.Int64
}

// Count returns the number of requests served.
func (h *Handler) Count() int64 { return h.count.Load() }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.count.Add(1)
	n, _ := io.Copy(io.Discard, r.Body)
	rep := Request{
		Backend:    h.Name,
		Method:     r.Method,
		Host:       r.Host,
		URI:        r.RequestURI,
		Proto:      r.Proto,
		RemoteAddr: r.RemoteAddr,
		Headers:    map[string][]string(r.Header),
		BodyBytes:  n,
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Backend", h.Name)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(rep)
}

// Summary returns the forwarding headers of r as "name: value" lines, sorted.
func Summary(r Request) string {
	var lines []string
	for k, v := range r.Headers {
		if strings.HasPrefix(k, "X-") || k == "Forwarded" {
			lines = append(lines, k+": "+strings.Join(v, ", "))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// Serve runs the handler on ln until it is closed.
func Serve(ln net.Listener, h *Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10e9, IdleTimeout: 120e9}
	return srv.Serve(ln)
}
