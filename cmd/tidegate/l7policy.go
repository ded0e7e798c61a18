package main

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tidegate/tidegate/l7"
	"github.com/tidegate/tidegate/l7/compress"
	"github.com/tidegate/tidegate/l7/conninfo"
	"github.com/tidegate/tidegate/l7/inspect"
	"github.com/tidegate/tidegate/l7/passthrough"
	"github.com/tidegate/tidegate/l7/ratelimit"
	"github.com/tidegate/tidegate/l7/rewrite"
	"github.com/tidegate/tidegate/shared/admin"
	"github.com/tidegate/tidegate/shared/config"
)

// l7PolicyBeforeCache returns the L7 options for the policies that run
// before the cache. In request order these are the framing checks and
// limits of inspect.WrapConn on each HTTP/1.x connection, the body limit
// of HTTP/2 requests and inspect.Normalize before routing, and then per
// route the access rules, the rate limit and the rewrites. With adm nil
// the metrics go to a private registry.
func l7PolicyBeforeCache(logger *slog.Logger, adm *admin.Server) []l7.Option {
	reg := policyRegisterer(adm)
	rep := inspect.NewReporter(inspect.NewMetrics(reg), logger)
	wrap := func(lc *config.Listener, c net.Conn) net.Conn {
		return inspect.WrapConn(c, inspect.LimitsFromConfig(*lc), rep.Report)
	}
	normalize := func(next http.Handler) http.Handler {
		return inspect.Normalize(rep, conninfo.ClientAddr, next)
	}
	bodyLimit := func(next http.Handler) http.Handler {
		return limitHTTP2Body(rep, next)
	}
	// The body limit applies to HTTP/2 only, and Normalize leaves a
	// request without Expect alone when its path is already normal, so
	// such requests may take the fast path.
	fastCheck := func(path string) bool {
		norm, err := inspect.NormalizePath(path)
		return err == nil && norm == path
	}
	rp := &requestPolicies{logger: logger, reg: reg, rep: rep}
	return []l7.Option{
		l7.WithListenerConnWrapper(wrap),
		l7.WithPreRouting(bodyLimit),
		l7.WithPreRouting(normalize),
		l7.WithFastPathCheck(fastCheck),
		l7.WithMiddleware("policy", rp.middleware),
	}
}

// l7PolicyAfterCache returns the L7 options for the policies that run after
// the cache, between it and the upstream: compression. The cache therefore
// stores compressed responses, one variant per content coding, because
// compression adds Vary: Accept-Encoding.
//
// NOTE: httputil.ReverseProxy flushes after every write of a response
// without Content-Length (Go 1.26), and the compressor sends a body
// unencoded when it is below min_size at its first flush. A chunked
// upstream response is therefore compressed only when the first read of
// its body returns at least min_size bytes.
func l7PolicyAfterCache(logger *slog.Logger, adm *admin.Server) []l7.Option {
	reg := policyRegisterer(adm)
	return []l7.Option{l7.WithMiddleware("compress", func(cfg *config.L7, rt *config.Route, next http.Handler) (http.Handler, error) {
		key := func(p config.Policy) any { return p.Compress }
		build := func(p config.Policy, next http.Handler) (http.Handler, []io.Closer, error) {
			if p.Compress == nil {
				return nil, nil, nil
			}
			c, err := compress.New(p.Compress, compress.Options{
				Route:      rt.Name,
				Registerer: reg,
				OnEncode: func(r *http.Request, enc string) {
					if f := l7.LogFields(r); f != nil {
						f.ContentEncoding = enc
					}
				},
			})
			if err != nil {
				return nil, nil, err
			}
			return c.Middleware(next), nil, nil
		}
		return perListener(cfg, rt, next, key, build)
	})}
}

// limitHTTP2Body applies the listener's max_body_bytes to HTTP/2 requests,
// which inspect.WrapConn does not see. A declared Content-Length above the
// limit gets 413 at once. A longer body without one is cut off at the
// limit, and the proxy then responds 413 unless the upstream has already
// started its response.
//
// NOTE: body_read_timeout and the other framing limits do not apply to
// HTTP/2. net/http bounds its header block with max_header_bytes.
func limitHTTP2Body(rep *inspect.Reporter, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lc := l7.ListenerConfig(r)
		if r.ProtoMajor < 2 || lc == nil || lc.Limits.MaxBodyBytes <= 0 || r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		limit := int64(lc.Limits.MaxBodyBytes)
		if r.ContentLength > limit {
			rej := inspect.Rejection{Status: http.StatusRequestEntityTooLarge, Reason: inspect.ReasonBodyTooLarge}
			rep.ReportClient(rej, conninfo.ClientAddr(r))
			http.Error(w, "413 Request Entity Too Large: "+rej.Reason, rej.Status)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		next.ServeHTTP(w, r)
	})
}

func policyRegisterer(adm *admin.Server) prometheus.Registerer {
	if adm == nil {
		return prometheus.NewRegistry()
	}
	return adm.Registry
}

// requestPolicies builds the access, rate-limit and rewrite chain of each
// route.
type requestPolicies struct {
	logger *slog.Logger
	reg    prometheus.Registerer
	rep    *inspect.Reporter
}

// requestSections identifies the sections a merged policy takes from the
// listener or the route, so listeners that share them share one chain and
// one rate limiter.
type requestSections struct {
	access    *config.AccessPolicy
	rateLimit *config.RateLimitPolicy
	rewrite   *config.RewritePolicy
}

func (rp *requestPolicies) middleware(cfg *config.L7, rt *config.Route, next http.Handler) (http.Handler, error) {
	key := func(p config.Policy) any {
		return requestSections{p.Access, p.RateLimit, p.Rewrite}
	}
	build := func(p config.Policy, next http.Handler) (http.Handler, []io.Closer, error) {
		return rp.chain(rt.Name, p, next)
	}
	return perListener(cfg, rt, next, key, build)
}

// chain wraps next in the access rules, then the rate limit, then the
// rewrites of p, so a denied request uses no rate-limit token and a limited
// one is never redirected. It returns a nil handler when p has none of
// these sections.
func (rp *requestPolicies) chain(routeName string, p config.Policy, next http.Handler) (http.Handler, []io.Closer, error) {
	if p.Access == nil && p.RateLimit == nil && p.Rewrite == nil {
		return nil, nil, nil
	}
	h := next
	if p.Rewrite != nil {
		rw, err := rewrite.New(p.Rewrite, rewrite.Options{
			Route:      routeName,
			ClientAddr: conninfo.ClientAddr,
			TLSState:   tlsState,
			Registerer: rp.reg,
			OnAction:   logRewrite,
		})
		if err != nil {
			return nil, nil, err
		}
		h = rw.Middleware(h)
	}

	var closers []io.Closer
	if p.RateLimit != nil {
		lim, err := ratelimit.New(p.RateLimit, ratelimit.Options{
			Route:      routeName,
			ClientAddr: conninfo.ClientAddr,
			Registerer: rp.reg,
			Logger:     rp.logger.With("component", "ratelimit", "route", routeName),
			OnDecision: logRateLimit,
		})
		if err != nil {
			return nil, nil, err
		}
		closers = append(closers, lim)
		h = lim.Middleware(h)
	}

	if p.Access != nil {
		acc, err := inspect.NewAccess(p.Access, conninfo.ClientAddr, rp.rep)
		if err != nil {
			closeAll(closers)
			return nil, nil, err
		}
		h = acc.Middleware(h)
	}
	return h, closers, nil
}

func logRateLimit(r *http.Request, d ratelimit.Decision) {
	f := l7.LogFields(r)
	if f == nil {
		return
	}
	switch {
	case !d.Allowed:
		f.RateLimitResult = ratelimit.ResultRejected
	case d.Delay > 0:
		f.RateLimitResult = ratelimit.ResultDelayed
		f.RateLimitDelayMS = float64(d.Delay.Microseconds()) / 1000
	default:
		f.RateLimitResult = ratelimit.ResultAllowed
	}
	remaining := d.Remaining
	f.RateLimitRemaining = &remaining
	f.RateLimitShared = d.Shared
}

func logRewrite(r *http.Request, action, detail string) {
	f := l7.LogFields(r)
	if f == nil {
		return
	}
	switch action {
	case rewrite.ActionPath:
		f.RewritePath = detail
	case rewrite.ActionRedirect:
		f.RedirectLocation = detail
	case rewrite.ActionFixedResponse:
		f.FixedResponse, _ = strconv.Atoi(detail)
	}
}

// tlsState returns the TLS details of r's connection for rewrite templates.
// r.TLS is nil on HTTP/1.x over TLS once a connection wrapper is installed,
// so the details come from conninfo, which records the server name and
// ALPN protocol but not the rest of the connection state.
func tlsState(r *http.Request) *tls.ConnectionState {
	if r.TLS != nil {
		return r.TLS
	}
	info := conninfo.FromRequest(r)
	if info == nil || !info.TLS {
		return nil
	}
	return &tls.ConnectionState{HandshakeComplete: true, ServerName: info.SNI, NegotiatedProtocol: info.ALPN}
}

// perListener returns the handler that runs, for each request on route rt,
// the chain build made from the route's policy merged with the policy of
// the listener that accepted the request. build returns a nil handler when
// the policy has nothing for it, and the request then goes to next.
// Listeners whose merged policies have the same key share one chain.
// perListener returns next itself when build has nothing for any listener,
// and otherwise a handler whose Close releases what the chains hold (the
// server calls it when a reload retires the route).
func perListener(cfg *config.L7, rt *config.Route, next http.Handler,
	key func(config.Policy) any,
	build func(config.Policy, http.Handler) (http.Handler, []io.Closer, error),
) (http.Handler, error) {
	d := &listenerDispatch{chains: map[string]http.Handler{}, next: next}
	built := map[any]http.Handler{}
	applied := false
	chainFor := func(p config.Policy) (http.Handler, error) {
		k := key(p)
		if h, ok := built[k]; ok {
			return h, nil
		}
		h, closers, err := build(p, next)
		if err != nil {
			return nil, err
		}
		d.closers = append(d.closers, closers...)
		// A nil chain stands for next.
		if h != nil {
			applied = true
		}
		built[k] = h
		return h, nil
	}

	for i := range cfg.Listeners {
		lc := &cfg.Listeners[i]
		h, err := chainFor(lc.Policy.Merge(rt.Policy))
		if err != nil {
			closeAll(d.closers)
			return nil, err
		}
		d.chains[lc.Name] = h
	}
	// Requests without connection details (none reach a listener that way)
	// get the route's own policy.
	var none *config.Policy
	fallback, err := chainFor(none.Merge(rt.Policy))
	if err != nil {
		closeAll(d.closers)
		return nil, err
	}
	d.fallback = fallback

	if !applied {
		return next, nil
	}
	return d, nil
}

// listenerDispatch picks a route's policy chain by the listener that
// accepted the request.
type listenerDispatch struct {
	// chains holds the chain of each listener by name, nil for a listener
	// whose policy has nothing for the route, which then goes to next.
	chains   map[string]http.Handler
	fallback http.Handler
	closers  []io.Closer
	next     http.Handler
}

// chain returns the handler for requests on the named listener.
func (d *listenerDispatch) chain(listener string) http.Handler {
	h, ok := d.chains[listener]
	if !ok {
		h = d.fallback
	}
	if h == nil {
		return d.next
	}
	return h
}

// PassThrough implements passthrough.Handler for the L7 fast path: the
// request passes when the listener's chain is next itself, or passes
// through the chain.
func (d *listenerDispatch) PassThrough(r *passthrough.Request) (http.Handler, func(int, passthrough.Head), bool) {
	h, ok := d.chains[r.Listener]
	if !ok {
		h = d.fallback
	}
	if h == nil {
		return d.next, nil, true
	}
	if pt, ok := h.(passthrough.Handler); ok {
		return pt.PassThrough(r)
	}
	return nil, nil, false
}

func (d *listenerDispatch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	listener := ""
	if info := conninfo.FromRequest(r); info != nil {
		listener = info.Listener
	}
	d.chain(listener).ServeHTTP(w, r)
}

// Close releases the rate limiters of every chain.
func (d *listenerDispatch) Close() error {
	return closeAll(d.closers)
}

func closeAll(closers []io.Closer) error {
	var err error
	for _, c := range closers {
		err = errors.Join(err, c.Close())
	}
	return err
}
