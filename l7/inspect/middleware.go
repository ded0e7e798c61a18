package inspect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/time/rate"

	"github.com/tidegate/tidegate/shared/config"
)

// Reasons used by the HTTP middlewares.
const (
	ReasonEncodedSlash   = "encoded_slash"
	ReasonAboveRoot      = "path_above_root"
	ReasonBadPath        = "bad_path"
	ReasonBadExpect      = "unsupported_expectation"
	ReasonBadMethod      = "bad_method"
	ReasonBadHost        = "bad_host"
	ReasonBadTarget      = "bad_target"
	ReasonDeniedAddress  = "address_denied"
	ReasonMethod         = "method_not_allowed"
	ReasonMissingHeader  = "missing_required_header"
	ReasonNoClientAddr   = "no_client_address"
	rejectLogInterval    = time.Second
	rejectLogFirstEvents = 10
)

// Metrics counts rejections. One value serves every connection and route.
type Metrics struct {
	rejected *prometheus.CounterVec
}

// NewMetrics registers the inspection metrics on reg, or reuses them when
// they are already registered there (as after a reload):
//
//	tidegate_l7_inspect_rejected_total{reason, status}
func NewMetrics(reg prometheus.Registerer) *Metrics {
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tidegate_l7_inspect_rejected_total",
		Help: "Requests rejected by inspection, by reason and status sent.",
	}, []string{"reason", "status"})
	return &Metrics{rejected: registerOrReuse(reg, rejected)}
}

func registerOrReuse[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(fmt.Sprintf("inspect: register metrics: %v", err))
	}
	return c
}

// Reporter counts and logs rejections. Its Report method fits the onReject
// argument of [WrapConn]. Log lines are rate-limited because a client can
// cause them at will.
type Reporter struct {
	metrics *Metrics
	logger  *slog.Logger
	every   *rate.Sometimes
}

// NewReporter returns a Reporter that logs through logger with
// "component"="inspect".
func NewReporter(m *Metrics, logger *slog.Logger) *Reporter {
	return &Reporter{
		metrics: m,
		logger:  logger.With("component", "inspect"),
		every:   &rate.Sometimes{First: rejectLogFirstEvents, Interval: rejectLogInterval},
	}
}

// Report counts rej and logs it, at most about once a second after the
// first few.
func (r *Reporter) Report(rej Rejection) {
	r.ReportClient(rej, netip.Addr{})
}

// ReportClient is Report with the client address added to the log line.
func (r *Reporter) ReportClient(rej Rejection, client netip.Addr) {
	r.metrics.rejected.WithLabelValues(rej.Reason, fmt.Sprint(rej.Status)).Inc()
	r.every.Do(func() {
		attrs := []slog.Attr{slog.String("reason", rej.Reason), slog.Int("status", rej.Status)}
		switch {
		case client.IsValid():
			attrs = append(attrs, slog.String("client", client.String()))
		case rej.Client != nil:
			attrs = append(attrs, slog.String("client", rej.Client.String()))
		}
		r.logger.LogAttrs(context.Background(), slog.LevelInfo, "request rejected", attrs...)
	})
}

// ClientAddrFunc returns the real client address of a request (from the
// PROXY header when the peer is a trusted L4), or the zero Addr when unknown.
type ClientAddrFunc func(*http.Request) netip.Addr

// Normalize returns middleware that runs before routing. It normalises the
// request path with [NormalizePath] (r.URL.Path, r.URL.RawPath and
// r.RequestURI are replaced, the query is kept) and rejects a request whose
// path cannot be normalised, or whose Expect header has any value but
// 100-continue (417). A request target that is not a path ("*" or an
// authority) is passed on unchanged.
func Normalize(rep *Reporter, client ClientAddrFunc, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// HTTP/2 pseudo-header fields reach here without the checks an
		// HTTP/1.1 request line gets from the framer, and could not be
		// written in one when forwarded (RFC 9113 section 8.3.1).
		if !httpguts.ValidHeaderFieldName(r.Method) {
			rejectRequest(w, r, rep, client, http.StatusBadRequest, ReasonBadMethod)
			return
		}
		if !lineSafe(r.Host) {
			rejectRequest(w, r, rep, client, http.StatusBadRequest, ReasonBadHost)
			return
		}
		if !lineSafe(r.URL.RawQuery) {
			rejectRequest(w, r, rep, client, http.StatusBadRequest, ReasonBadTarget)
			return
		}
		if exp := r.Header.Values("Expect"); len(exp) > 0 {
			if len(exp) > 1 || !strings.EqualFold(exp[0], "100-continue") {
				rejectRequest(w, r, rep, client, http.StatusExpectationFailed, ReasonBadExpect)
				return
			}
		}
		if r.URL.Path == "" && r.URL.Opaque == "" && r.Method != http.MethodConnect && r.RequestURI != "*" {
			r.URL.Path = "/"
		}
		if !strings.HasPrefix(r.URL.Path, "/") {
			next.ServeHTTP(w, r)
			return
		}
		norm, err := NormalizePath(r.URL.EscapedPath())
		if err != nil {
			reason := ReasonBadPath
			switch {
			case errors.Is(err, ErrEncodedSlash):
				reason = ReasonEncodedSlash
			case errors.Is(err, ErrAboveRoot):
				reason = ReasonAboveRoot
			}
			rejectRequest(w, r, rep, client, http.StatusBadRequest, reason)
			return
		}
		if err := SetPath(r, norm); err != nil {
			rejectRequest(w, r, rep, client, http.StatusBadRequest, ReasonBadPath)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// lineSafe reports whether s has no space or control byte, which would end
// or break a field of a request line or the Host field. An international
// name passes: the transport writes it in Punycode.
func lineSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// SetPath replaces the path of r with the escaped path p and keeps the
// query. It updates r.URL.Path, r.URL.RawPath and r.RequestURI.
func SetPath(r *http.Request, escaped string) error {
	path, err := url.PathUnescape(escaped)
	if err != nil {
		return fmt.Errorf("set path %q: %w", escaped, err)
	}
	r.URL.Path = path
	r.URL.RawPath = ""
	if r.URL.EscapedPath() != escaped {
		r.URL.RawPath = escaped
	}
	r.RequestURI = r.URL.RequestURI()
	return nil
}

// Access enforces an [config.AccessPolicy] on one route.
type Access struct {
	allow, deny []netip.Prefix
	methods     []string
	allowHeader string
	required    []string
	client      ClientAddrFunc
	rep         *Reporter
}

// NewAccess builds the access rules of one route. client supplies the real
// client address. Rules that match on addresses reject a request with no
// known client address.
func NewAccess(cfg *config.AccessPolicy, client ClientAddrFunc, rep *Reporter) (*Access, error) {
	a := &Access{client: client, rep: rep}
	for _, s := range cfg.Allow {
		p, err := config.ParsePrefixOrAddr(s)
		if err != nil {
			return nil, fmt.Errorf("inspect: parse allow %q: %w", s, err)
		}
		a.allow = append(a.allow, p)
	}
	for _, s := range cfg.Deny {
		p, err := config.ParsePrefixOrAddr(s)
		if err != nil {
			return nil, fmt.Errorf("inspect: parse deny %q: %w", s, err)
		}
		a.deny = append(a.deny, p)
	}
	a.methods = slices.Clone(cfg.Methods)
	if len(a.methods) > 0 {
		allowed := slices.Clone(a.methods)
		if slices.Contains(allowed, http.MethodGet) && !slices.Contains(allowed, http.MethodHead) {
			// RFC 9110 expects HEAD wherever GET works.
			allowed = append(allowed, http.MethodHead)
			a.methods = allowed
		}
		a.allowHeader = strings.Join(allowed, ", ")
	}
	for _, h := range cfg.RequiredHeaders {
		a.required = append(a.required, http.CanonicalHeaderKey(h))
	}
	return a, nil
}

// Middleware returns next behind the access rules: a denied address gets
// 403, a method not listed 405 with Allow, and a missing required header 400.
// None of them reads the body, so a client that sent Expect: 100-continue
// never gets a 100 Continue and never sends the body.
func (a *Access) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(a.allow) > 0 || len(a.deny) > 0 {
			addr := a.client(r).Unmap()
			if !addr.IsValid() {
				rejectRequest(w, r, a.rep, a.client, http.StatusForbidden, ReasonNoClientAddr)
				return
			}
			if !a.addrAllowed(addr) {
				rejectRequest(w, r, a.rep, a.client, http.StatusForbidden, ReasonDeniedAddress)
				return
			}
		}
		if len(a.methods) > 0 && !slices.Contains(a.methods, r.Method) {
			w.Header().Set("Allow", a.allowHeader)
			rejectRequest(w, r, a.rep, a.client, http.StatusMethodNotAllowed, ReasonMethod)
			return
		}
		for _, h := range a.required {
			if r.Header.Get(h) == "" {
				rejectRequest(w, r, a.rep, a.client, http.StatusBadRequest, ReasonMissingHeader)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (a *Access) addrAllowed(addr netip.Addr) bool {
	for _, p := range a.deny {
		if p.Contains(addr) {
			return false
		}
	}
	if len(a.allow) == 0 {
		return true
	}
	for _, p := range a.allow {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

func rejectRequest(w http.ResponseWriter, r *http.Request, rep *Reporter, client ClientAddrFunc, status int, reason string) {
	if rep != nil {
		var addr netip.Addr
		if client != nil {
			addr = client(r)
		}
		rep.ReportClient(Rejection{Status: status, Reason: reason}, addr)
	}
	http.Error(w, fmt.Sprintf("%d %s: %s", status, http.StatusText(status), reason), status)
}
