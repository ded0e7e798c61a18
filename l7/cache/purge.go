package cache

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// PurgeHandler returns the admin handler that removes stored responses. It
// accepts POST or DELETE with one of these query or form parameters:
//
//	url=https://example.com/a?b   every variant stored for that exact URL
//	prefix=https://example.com/a  every URL that starts with the prefix
//
// A URL without a scheme ("example.com/a") purges both http and https. The
// reply is JSON: {"purged": N}. Register it with the admin server's
// HandleMutating so that it requires the admin token.
func (c *Cache) PurgeHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost && r.Method != http.MethodDelete {
			w.Header().Set("Allow", "POST, DELETE")
			c.rejectPurge(w, r, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed (use POST or DELETE)")
			return
		}
		form, err := purgeForm(w, r)
		if err != nil {
			c.rejectPurge(w, r, http.StatusBadRequest, "invalid purge request: "+err.Error())
			return
		}
		exact, prefix := form.Get("url"), form.Get("prefix")
		if (exact == "") == (prefix == "") {
			c.rejectPurge(w, r, http.StatusBadRequest, "invalid purge request: set exactly one of url or prefix")
			return
		}

		target, isPrefix := exact, false
		if prefix != "" {
			target, isPrefix = prefix, true
		}
		keys, err := purgeKeys(target)
		if err != nil {
			c.rejectPurge(w, r, http.StatusBadRequest, err.Error())
			return
		}
		n := 0
		for _, k := range keys {
			if isPrefix {
				n += c.store.removePrefix(k)
			} else {
				n += c.store.remove(k)
			}
		}
		c.metrics.purged.Add(float64(n))
		c.logger.Info("cache purged", "target", target, "prefix", isPrefix, "entries", n)

		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(struct {
			Purged int `json:"purged"`
		}{n})
	})
}

// rejectPurge sends status with msg and logs the rejected request.
func (c *Cache) rejectPurge(w http.ResponseWriter, r *http.Request, status int, msg string) {
	c.logger.Warn("purge request rejected", "status", status, "err", msg, "remote", r.RemoteAddr)
	http.Error(w, msg, status)
}

// purgeForm merges the query with a form-encoded body. net/http parses a
// body only for POST, PUT and PATCH, so DELETE bodies are read here.
func purgeForm(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	form, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, err
	}
	ct := r.Header.Get("Content-Type")
	if r.Body == nil || !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		return form, nil
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		return nil, err
	}
	fromBody, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, err
	}
	for k, vs := range fromBody {
		form[k] = append(form[k], vs...)
	}
	return form, nil
}

// purgeKeys turns a purge target into the primary keys, or key prefixes,
// it covers: one per scheme.
func purgeKeys(target string) ([]string, error) {
	schemes := []string{"http", "https"}
	if i := strings.Index(target, "://"); i >= 0 {
		scheme := strings.ToLower(target[:i])
		if scheme != "http" && scheme != "https" {
			return nil, errInvalidPurge("scheme " + scheme + " is not http or https")
		}
		schemes = []string{scheme}
		target = target[i+3:]
	}
	u, err := url.Parse("http://" + target)
	if err != nil || u.Host == "" {
		return nil, errInvalidPurge("target " + target + " is not a URL such as https://example.com/path")
	}
	var keys []string
	for _, scheme := range schemes {
		// A prefix is matched as given, so "/a" also covers "/ab", and an
		// empty path covers the whole host.
		keys = append(keys, primaryKey(scheme, u.Host, u.EscapedPath(), u.RawQuery))
	}
	return keys, nil
}

type errInvalidPurge string

func (e errInvalidPurge) Error() string { return "invalid purge target: " + string(e) }
