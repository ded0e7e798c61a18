package status

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

//go:embed assets/status.html assets/status.css assets/status.js
var assets embed.FS

// Collector builds the current document of one process.
type Collector func() (*Document, error)

// Mux is the part of the admin server this package registers on.
type Mux interface {
	Handle(pattern string, h http.Handler)
}

// RefreshSeconds is how often the page polls for a new rendering.
const RefreshSeconds = 2

// Register adds GET /status (the HTML page), GET /status.json and the
// page's embedded assets under GET /status/assets/ to mux.
//
// The page itself changes nothing. Its drain buttons call the tier's own
// mutating admin endpoints (POST /vips/{vip}/reals/{real}/weight on an L4,
// POST /upstreams/{upstream}/backends/{backend}/drain on an L7), which
// carry the token check and the cross-origin protection of the admin
// server.
func Register(mux Mux, collect Collector, logger *slog.Logger) {
	page := template.Must(template.New("status.html").Funcs(templateFuncs).ParseFS(assets, "assets/status.html"))
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded directory is fixed at build time
	}

	mux.Handle("GET /status.json", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		doc, err := collect()
		if err != nil {
			logger.Error("status collection failed", "err", err)
			http.Error(w, "status collection failed: "+err.Error(), http.StatusInternalServerError)
			return
		}
		setSecurityHeaders(w)
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(doc)
	}))

	mux.Handle("GET /status", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		doc, err := collect()
		if err != nil {
			logger.Error("status collection failed", "err", err)
			http.Error(w, "status collection failed: "+err.Error(), http.StatusInternalServerError)
			return
		}
		var buf bytes.Buffer
		if err := page.Execute(&buf, pageData{Doc: doc, Problems: doc.Problems(), Draining: doc.Draining(), Refresh: RefreshSeconds}); err != nil {
			logger.Error("status page rendering failed", "err", err)
			http.Error(w, "status page rendering failed", http.StatusInternalServerError)
			return
		}
		setSecurityHeaders(w)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(buf.Bytes())
	}))

	files := http.StripPrefix("/status/assets/", http.FileServerFS(static))
	mux.Handle("GET /status/assets/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setSecurityHeaders(w)
		files.ServeHTTP(w, r)
	}))
}

// setSecurityHeaders keeps the page from loading anything that is not its
// own, from being framed (so a drain button cannot be clickjacked) and from
// being cached.
func setSecurityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

type pageData struct {
	Doc      *Document
	Problems []Problem
	Draining []Problem
	Refresh  int
}

var templateFuncs = template.FuncMap{
	"rate":     formatRate,
	"count":    formatCount,
	"bytes":    formatBytes,
	"duration": formatSeconds,
	"percent":  formatPercent,
	"labels":   formatLabels,
	"pathEscape": func(s string) string {
		return url.PathEscape(s)
	},
	"time": func(t time.Time) string { return t.UTC().Format("15:04:05 UTC") },
}

const dash = "–"

func formatRate(p *float64) string {
	if p == nil {
		return dash
	}
	return formatCount(*p) + "/s"
}

func formatCount(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.1fG", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	case v == float64(int64(v)):
		return fmt.Sprintf("%d", int64(v))
	default:
		return fmt.Sprintf("%.1f", v)
	}
}

func formatBytes(v float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f %s", v, units[i])
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

func formatSeconds(p *float64) string {
	if p == nil {
		return dash
	}
	d := time.Duration(*p * float64(time.Second))
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%dµs", d.Microseconds())
	}
}

func formatPercent(p *float64) string {
	if p == nil {
		return dash
	}
	return fmt.Sprintf("%.1f%%", *p*100)
}

func formatLabels(labels map[string]string) string {
	if len(labels) == 0 {
		return ""
	}
	parts := make([]string, 0, len(labels))
	for k, v := range labels {
		parts = append(parts, k+"="+v)
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}
