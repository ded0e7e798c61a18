package rewrite

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tidegate/tidegate/l7/inspect"
	"github.com/tidegate/tidegate/shared/config"
)

// Actions, used as metric labels and passed to Options.OnAction.
const (
	ActionPath            = "path"
	ActionRedirect        = "redirect"
	ActionFixedResponse   = "fixed_response"
	ActionRequestHeaders  = "request_headers"
	ActionResponseHeaders = "response_headers"
	ActionRejected        = "rejected" // the rewritten path was invalid
)

// Options are the dependencies of a [Rewriter]. Only Route is required.
type Options struct {
	Route string
	// ClientAddr returns the real client address for ${client_ip}.
	ClientAddr func(*http.Request) netip.Addr
	// RequestID returns the request ID for ${request_id}. Without it the
	// X-Request-Id request header is used.
	RequestID func(*http.Request) string
	// TLSState returns the TLS state for ${tls_sni} and ${scheme}. Without
	// it r.TLS is used.
	TLSState   func(*http.Request) *tls.ConnectionState
	Registerer prometheus.Registerer // nil registers nothing
	// OnAction, when set, is called for each action applied to a request,
	// with a detail: the new path, the redirect location, or the status of
	// a fixed response.
	OnAction func(r *http.Request, action, detail string)
}

// Rewriter applies one route's rewrite policy. It is safe for concurrent
// use.
type Rewriter struct {
	opts    Options
	actions *prometheus.CounterVec

	// Path rewrite: a prefix swap (prefixFrom to prefixTo) or a regex.
	hasPrefix   bool
	prefixFrom  string
	prefixTo    string
	regex       *regexp.Regexp
	replacement string

	redirectStatus int
	redirectTo     *template

	fixed *fixedResponse

	request  *headerRules
	response *headerRules
}

type fixedResponse struct {
	status int
	header http.Header
	body   []byte
}

type headerRules struct {
	remove []string
	set    []headerValue
	add    []headerValue
}

type headerValue struct {
	name  string
	value template
}

// New builds the rewriter of one route from its policy.
func New(cfg *config.RewritePolicy, opts Options) (*Rewriter, error) {
	rw := &Rewriter{opts: opts}
	rw.actions = registerOrReuse(opts.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tidegate_l7_rewrite_actions_total",
		Help: "Rewrite actions applied, by route and action.",
	}, []string{"route", "action"})).MustCurryWith(prometheus.Labels{"route": opts.Route})

	if p := cfg.Path; p != nil {
		switch {
		case p.StripPrefix != "":
			rw.hasPrefix, rw.prefixFrom, rw.prefixTo = true, strings.TrimSuffix(p.StripPrefix, "/"), "/"
		case p.ReplacePrefix != nil:
			rw.hasPrefix, rw.prefixFrom, rw.prefixTo = true, strings.TrimSuffix(p.ReplacePrefix.From, "/"), p.ReplacePrefix.To
		case p.Regex != nil:
			re, err := regexp.Compile(p.Regex.Pattern)
			if err != nil {
				return nil, fmt.Errorf("rewrite: route %q: compile %q: %w", opts.Route, p.Regex.Pattern, err)
			}
			rw.regex, rw.replacement = re, p.Regex.Replacement
		}
	}
	if r := cfg.Redirect; r != nil {
		t, err := parseTemplate(r.Location)
		if err != nil {
			return nil, fmt.Errorf("rewrite: route %q: redirect location: %w", opts.Route, err)
		}
		rw.redirectStatus, rw.redirectTo = r.Status, &t
	}
	if f := cfg.FixedResponse; f != nil {
		fr := &fixedResponse{status: f.Status, header: http.Header{}, body: []byte(f.Body)}
		for name, v := range f.Headers {
			fr.header.Set(name, v)
		}
		if fr.header.Get("Content-Type") == "" && len(fr.body) > 0 {
			fr.header.Set("Content-Type", "text/plain; charset=utf-8")
		}
		fr.header.Set("Content-Length", strconv.Itoa(len(fr.body)))
		rw.fixed = fr
	}
	var err error
	if rw.request, err = compileRules(cfg.RequestHeaders); err != nil {
		return nil, fmt.Errorf("rewrite: route %q: request_headers: %w", opts.Route, err)
	}
	if rw.response, err = compileRules(cfg.ResponseHeaders); err != nil {
		return nil, fmt.Errorf("rewrite: route %q: response_headers: %w", opts.Route, err)
	}
	return rw, nil
}

func compileRules(cfg *config.HeaderRules) (*headerRules, error) {
	if cfg == nil {
		return nil, nil
	}
	h := &headerRules{}
	for _, name := range cfg.Remove {
		h.remove = append(h.remove, http.CanonicalHeaderKey(name))
	}
	// Map order is random; sort so the result does not vary between runs.
	for _, pair := range []struct {
		src map[string]string
		dst *[]headerValue
	}{{cfg.Set, &h.set}, {cfg.Add, &h.add}} {
		names := make([]string, 0, len(pair.src))
		for name := range pair.src {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			t, err := parseTemplate(pair.src[name])
			if err != nil {
				return nil, fmt.Errorf("header %s: %w", name, err)
			}
			*pair.dst = append(*pair.dst, headerValue{http.CanonicalHeaderKey(name), t})
		}
	}
	return h, nil
}

// apply edits h: remove, then set, then add. It returns the Host value set
// by a rule, or "".
func (h *headerRules) apply(hdr http.Header, v vars) string {
	host := ""
	for _, name := range h.remove {
		hdr.Del(name)
	}
	for _, hv := range h.set {
		val := hv.value.expand(v)
		if hv.name == "Host" {
			host = val
			continue
		}
		hdr.Set(hv.name, val)
	}
	for _, hv := range h.add {
		val := hv.value.expand(v)
		if hv.name == "Host" {
			host = val
			continue
		}
		hdr.Add(hv.name, val)
	}
	return host
}

// Middleware returns next behind the rewrite policy. A fixed response or a
// redirect, evaluated on the request as it arrived, ends the request.
// Otherwise the path is rewritten and normalised again with
// [inspect.NormalizePath], keeping the query. A result that climbs above
// the root gets 400. Request header rules run after the path rewrite, and
// response header rules run when the handler writes the response head.
func (rw *Rewriter) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := vars{r: r, opts: &rw.opts}
		if rw.fixed != nil {
			rw.count(r, ActionFixedResponse, strconv.Itoa(rw.fixed.status))
			h := w.Header()
			for name, vals := range rw.fixed.header {
				h[name] = vals
			}
			if rw.response != nil {
				rw.response.apply(h, v)
			}
			w.WriteHeader(rw.fixed.status)
			_, _ = w.Write(rw.fixed.body)
			return
		}
		if rw.redirectTo != nil {
			loc := rw.redirectTo.expand(v)
			rw.count(r, ActionRedirect, loc)
			h := w.Header()
			h.Set("Location", loc)
			if rw.response != nil {
				rw.response.apply(h, v)
			}
			w.WriteHeader(rw.redirectStatus)
			return
		}
		if rw.hasPrefix || rw.regex != nil {
			if !rw.rewritePath(r) {
				rw.count(r, ActionRejected, r.URL.EscapedPath())
				http.Error(w, "400 Bad Request: rewritten path is invalid", http.StatusBadRequest)
				return
			}
		}
		if rw.request != nil {
			if host := rw.request.apply(r.Header, v); host != "" {
				r.Host = host
			}
			rw.count(r, ActionRequestHeaders, "")
		}
		if rw.response != nil {
			rw.count(r, ActionResponseHeaders, "")
			w = &responseWriter{ResponseWriter: w, rules: rw.response, vars: v}
		}
		next.ServeHTTP(w, r)
	})
}

// rewritePath rewrites r's path and reports whether the result is valid.
// A path the rule does not match is left alone.
func (rw *Rewriter) rewritePath(r *http.Request) bool {
	path := r.URL.EscapedPath()
	newPath, ok := rw.newPath(path)
	if !ok {
		return true
	}
	norm, err := inspect.NormalizePath(newPath)
	if err != nil {
		return false
	}
	if err := inspect.SetPath(r, norm); err != nil {
		return false
	}
	rw.count(r, ActionPath, norm)
	return true
}

// newPath returns the rewritten escaped path and whether the rule matched.
func (rw *Rewriter) newPath(path string) (string, bool) {
	if rw.regex != nil {
		m := rw.regex.FindStringSubmatchIndex(path)
		if m == nil {
			return "", false
		}
		return string(rw.regex.ExpandString(nil, rw.replacement, path, m)), true
	}
	rest, ok := strings.CutPrefix(path, rw.prefixFrom)
	if !ok || (rest != "" && rest[0] != '/') {
		return "", false
	}
	if rest == "" {
		return rw.prefixTo, true
	}
	return strings.TrimSuffix(rw.prefixTo, "/") + rest, true
}

func (rw *Rewriter) count(r *http.Request, action, detail string) {
	rw.actions.WithLabelValues(action).Inc()
	if rw.opts.OnAction != nil {
		rw.opts.OnAction(r, action, detail)
	}
}

// responseWriter applies response header rules to the final response head.
type responseWriter struct {
	http.ResponseWriter
	rules       *headerRules
	vars        vars
	wroteHeader bool
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *responseWriter) WriteHeader(status int) {
	if !w.wroteHeader && status >= 200 {
		w.wroteHeader = true
		w.rules.apply(w.Header(), w.vars)
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

// Flush sends the head with the rules applied before flushing, even when
// the handler flushes before writing anything.
func (w *responseWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
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
		panic(fmt.Sprintf("rewrite: register metrics: %v", err))
	}
	return c
}
