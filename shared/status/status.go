// Package status builds the operator's view of one tidegate process: the
// JSON document served at /status.json, the HTML page at /status that
// renders it, and the table that "tidegate status" prints. The tiers fill
// the document from their own state and from their Prometheus registry;
// this package holds the types, the rendering and the rate sampling.
package status

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Backend and real states, the values of the "state" fields.
const (
	StateUp       = "up"
	StateDown     = "down"     // failed its active health checks
	StateEjected  = "ejected"  // passively ejected after consecutive failures (L7 only)
	StateDraining = "draining" // healthy, but weight 0: no new connections or requests
)

// Document is the whole status of one process, the body of /status.json.
// Exactly one of L4 and L7 is set.
type Document struct {
	Tier      string    `json:"tier"` // "l4" or "l7"
	Generated time.Time `json:"generated"`
	// RateWindowSeconds is the time between the two registry samples that
	// every rate and percentile in the document is computed from. It is 0
	// on the first request, when there is no earlier sample: then every rate
	// and percentile is absent.
	RateWindowSeconds float64 `json:"rate_window_seconds"`
	L4                *L4     `json:"l4,omitempty"`
	L7                *L7     `json:"l7,omitempty"`
}

// L4 is the status of an L4 process.
type L4 struct {
	Engine string `json:"engine"` // "xdp" or "userspace"
	VIPs   []VIP  `json:"vips"`
	// XDP lists every tidegate_l4_xdp_* series (new flows, passes to
	// userspace by reason, drops); it is empty when no XDP engine runs.
	XDP []Counter `json:"xdp"`
}

// VIP is one L4 virtual service.
type VIP struct {
	Name              string   `json:"name"`
	Address           string   `json:"address"`
	Engine            string   `json:"engine"`
	ProxyProtocol     string   `json:"proxy_protocol"`
	Affinity          string   `json:"affinity"`
	UsableReals       int      `json:"usable_reals"`
	ActiveConnections float64  `json:"active_connections"`
	AcceptRate        *float64 `json:"accept_rate,omitempty"` // connections per second
	// Rejected counts connections closed without reaching a real, by
	// reason, since the process started.
	Rejected map[string]float64 `json:"rejected"`
	Reals    []Real             `json:"reals"`
}

// Real is one L7 node behind a VIP.
type Real struct {
	Address           string   `json:"address"`
	State             string   `json:"state"`
	Healthy           bool     `json:"healthy"`
	Weight            int      `json:"weight"`
	ConfigWeight      int      `json:"config_weight"`
	LastError         string   `json:"last_error,omitempty"`
	ActiveConnections float64  `json:"active_connections"`
	Connections       float64  `json:"connections_total"`
	ConnectionRate    *float64 `json:"connection_rate,omitempty"` // per second
	BytesIn           float64  `json:"bytes_client_to_real"`
	BytesOut          float64  `json:"bytes_real_to_client"`
	BytesInRate       *float64 `json:"bytes_client_to_real_rate,omitempty"` // bytes per second
	BytesOutRate      *float64 `json:"bytes_real_to_client_rate,omitempty"`
}

// L7 is the status of an L7 process.
type L7 struct {
	Listeners []Listener `json:"listeners"`
	Routes    []Route    `json:"routes"`
	Upstreams []Upstream `json:"upstreams"`
	// Cache and RateLimit list every tidegate_l7_cache_* and
	// tidegate_l7_ratelimit_* series. They are empty when the binary has no
	// cache or rate limiter, or when no route uses one.
	Cache     []Counter `json:"cache"`
	RateLimit []Counter `json:"rate_limit"`
	// CacheHitRatio is hits / (hits + misses) over the rate window, and
	// RateLimitedRate the requests per second rejected by a rate limit.
	// Both are absent without those series or without a base sample.
	CacheHitRatio   *float64 `json:"cache_hit_ratio,omitempty"`
	RateLimitedRate *float64 `json:"rate_limited_rate,omitempty"`
}

// Listener is one L7 listening socket.
type Listener struct {
	Name              string   `json:"name"`
	Address           string   `json:"address"`
	TLS               bool     `json:"tls"`
	ActiveConnections float64  `json:"active_connections"`
	ConnectionRate    *float64 `json:"connection_rate,omitempty"`
}

// Route is one L7 route with its request figures.
type Route struct {
	Name        string   `json:"name"`
	Match       string   `json:"match"`
	Upstream    string   `json:"upstream"`
	Requests    float64  `json:"requests_total"`
	RequestRate *float64 `json:"request_rate,omitempty"` // per second
	// ErrorRatio is the share of responses with a 5xx status over the rate
	// window, from 0 to 1. It is absent when there were no requests.
	ErrorRatio *float64 `json:"error_ratio,omitempty"`
}

// Upstream is one L7 pool with its backends.
type Upstream struct {
	Name        string   `json:"name"`
	Balance     string   `json:"balance"`
	RequestRate *float64 `json:"request_rate,omitempty"`
	// Latency percentiles in seconds over the rate window, estimated from
	// the tidegate_l7_request_duration_seconds buckets; absent when no
	// request finished in the window.
	LatencyP50 *float64  `json:"latency_p50_seconds,omitempty"`
	LatencyP90 *float64  `json:"latency_p90_seconds,omitempty"`
	LatencyP99 *float64  `json:"latency_p99_seconds,omitempty"`
	Backends   []Backend `json:"backends"`
}

// Backend is one server of an L7 upstream.
type Backend struct {
	Address     string `json:"address"`
	State       string `json:"state"`
	Healthy     bool   `json:"healthy"`
	Ejected     bool   `json:"ejected"`
	Draining    bool   `json:"draining"` // drained through the admin API
	Weight      int    `json:"weight"`
	InFlight    int64  `json:"in_flight"`
	Connections int64  `json:"connections"`
	Ejections   uint64 `json:"ejections_total"`
	// Request figures over the rate window for requests this backend
	// served, from the tidegate_l7_backend_request* series. They are
	// absent like the upstream's when there is no base sample or request.
	RequestRate *float64 `json:"request_rate,omitempty"`
	ErrorRatio  *float64 `json:"error_ratio,omitempty"`
	LatencyP50  *float64 `json:"latency_p50_seconds,omitempty"`
	LatencyP99  *float64 `json:"latency_p99_seconds,omitempty"`
}

// Counter is one Prometheus series shown as it is.
type Counter struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	Value  float64           `json:"value"`
	Rate   *float64          `json:"rate,omitempty"` // per second, for counters
}

// Problem is one real or backend that is not serving.
type Problem struct {
	Group   string // the VIP or upstream name
	Address string
	State   string
}

// Problems returns every real and backend that is down or ejected, in
// document order. Draining ones are not problems: an operator chose that.
func (d *Document) Problems() []Problem {
	return d.inStates(StateDown, StateEjected)
}

// Draining returns every real and backend that is healthy but drained
// (weight 0), in document order.
func (d *Document) Draining() []Problem {
	return d.inStates(StateDraining)
}

func (d *Document) inStates(states ...string) []Problem {
	var out []Problem
	if d.L4 != nil {
		for _, v := range d.L4.VIPs {
			for _, r := range v.Reals {
				if slices.Contains(states, r.State) {
					out = append(out, Problem{Group: v.Name, Address: r.Address, State: r.State})
				}
			}
		}
	}
	if d.L7 != nil {
		for _, u := range d.L7.Upstreams {
			for _, b := range u.Backends {
				if slices.Contains(states, b.State) {
					out = append(out, Problem{Group: u.Name, Address: b.Address, State: b.State})
				}
			}
		}
	}
	return out
}

// maxDocumentSize bounds what [Parse] accepts; a status document of a
// large fleet is well under a megabyte.
const maxDocumentSize = 8 << 20

// Parse decodes a /status.json body and checks that it describes exactly
// one tier.
func Parse(data []byte) (*Document, error) {
	if len(data) > maxDocumentSize {
		return nil, fmt.Errorf("parse status: document is %d bytes, more than the %d allowed", len(data), maxDocumentSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var d Document
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("parse status: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parse status: more than one JSON value")
	}
	switch {
	case d.Tier == "l4" && d.L4 != nil && d.L7 == nil:
	case d.Tier == "l7" && d.L7 != nil && d.L4 == nil:
	default:
		return nil, fmt.Errorf("parse status: tier %q does not match the sections present (want l4 or l7 with its own section)", d.Tier)
	}
	return &d, nil
}
