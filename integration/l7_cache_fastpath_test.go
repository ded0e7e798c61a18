//go:build integration

package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawCacheBackend serves fixed raw responses by request path on
// 127.0.0.1, without the body for HEAD. A request with If-None-Match gets
// the path's conditional response when it has one.
func rawCacheBackend(t *testing.T, responses, conditional map[string]string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	serve := func(c net.Conn) {
		defer c.Close()
		tp := textproto.NewReader(bufio.NewReader(c))
		for {
			line, err := tp.ReadLine()
			if err != nil {
				return
			}
			h, err := tp.ReadMIMEHeader()
			if err != nil {
				return
			}
			method, rest, _ := strings.Cut(line, " ")
			path, _, _ := strings.Cut(rest, " ")
			raw, ok := responses[path]
			if cond, has := conditional[path]; has && h.Get("If-None-Match") != "" {
				raw, ok = cond, true
			}
			if !ok {
				raw = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
			}
			if method == http.MethodHead {
				head, _, _ := strings.Cut(raw, "\r\n\r\n")
				raw = head + "\r\n\r\n"
			}
			if _, err := io.WriteString(c, raw); err != nil {
				return
			}
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// rawHTTP sends raw on a new connection to addr and returns all the bytes
// of the response, read until the L7 closes the connection.
func rawHTTP(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read response from %s: %v (got %q)", addr, err, out)
	}
	return string(out)
}

// splitResponse returns the status line, field lines and body of one raw
// response, and reports each head line that does not end in CRLF and each
// field that must appear at most once but appears more often.
func splitResponse(t *testing.T, name, raw string) (status string, fields []string, body string) {
	t.Helper()
	head, body, ok := strings.Cut(raw, "\r\n\r\n")
	if !ok {
		t.Fatalf("%s: no end of head in %q", name, raw)
	}
	lines := strings.Split(head, "\r\n")
	counts := map[string]int{}
	for _, l := range lines[1:] {
		if strings.ContainsAny(l, "\r\n") {
			t.Errorf("%s: head line %q has a bare CR or LF", name, l)
		}
		n, _, ok := strings.Cut(l, ":")
		if !ok || n == "" {
			t.Errorf("%s: invalid field line %q", name, l)
		}
		counts[strings.ToLower(n)]++
	}
	for _, single := range []string{"content-length", "content-type", "date", "age", "connection"} {
		if counts[single] > 1 {
			t.Errorf("%s: %s sent %d times in %q", name, single, counts[single], head)
		}
	}
	return lines[0], lines[1:], body
}

// TestL7CacheFastHitsMatchGeneral runs the tidegate binary with a listener
// on the fast path and one with fast_path: false. It stores responses from
// a backend that sends unusual heads, and checks that the fast path serves
// the hits with the same status line, fields and body as net/http. It then
// revalidates and purges an entry and checks the fast hits that follow.
func TestL7CacheFastHitsMatchGeneral(t *testing.T) {
	const maxAge = "Cache-Control: max-age=3600\r\n"
	responses := map[string]string{
		"/empty-type": "HTTP/1.1 200 OK\r\n" + maxAge + "Content-Type:\r\nContent-Length: 6\r\n\r\n<html>",
		"/status-599": "HTTP/1.1 599 Odd\r\n" + maxAge + "Content-Length: 2\r\n\r\nok",
		"/case":       "HTTP/1.1 200 OK\r\n" + maxAge + "x-a: 1\r\nX-A: 2\r\nAge: 100\r\nContent-Length: 2\r\n\r\nok",
		"/vary":       "HTTP/1.1 200 OK\r\n" + maxAge + "Vary: Accept-Encoding, X-B\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
		"/reval":      "HTTP/1.1 200 OK\r\n" + maxAge + "ETag: \"r\"\r\nX-Old: 1\r\nContent-Length: 2\r\n\r\nok",
	}
	conditional := map[string]string{
		"/reval": "HTTP/1.1 304 Not Modified\r\nETag: \"r\"\r\nCache-Control: max-age=7200\r\nX-Old: 2\r\nX-New: 3\r\n\r\n",
	}
	fastAddr, generalAddr := freeAddr(t), freeAddr(t)
	l := startCacheL7(t, rawCacheBackend(t, responses, conditional), fmt.Sprintf(`    - name: fast
      address: %s
    - name: general
      address: %s
      fast_path: false`, fastAddr, generalAddr))
	addrs := map[string]string{"fast": fastAddr, "general": generalAddr}
	fastServed := func() float64 {
		v, _ := metricValue(t, l.admin, `tidegate_l7_fast_path_requests_total{listener="fast"}`)
		return v
	}
	ttl := regexp.MustCompile(`ttl=-?[0-9]+`)
	type response struct {
		status string
		fields []string // sorted, without Date, X-Request-Id and Age
		body   string
		hit    bool
	}
	exchange := func(listener, method, path, extra string) response {
		t.Helper()
		raw := rawHTTP(t, addrs[listener], method+" "+path+" HTTP/1.1\r\nHost: "+cacheHost+"\r\nConnection: close\r\n"+extra+"\r\n")
		name := listener + " " + method + " " + path
		status, fields, body := splitResponse(t, name, raw)
		r := response{status: status, body: body}
		for _, f := range fields {
			n, v, _ := strings.Cut(f, ":")
			switch strings.ToLower(n) {
			case "date", "x-request-id", "age":
				continue
			case "cache-status":
				r.hit = strings.HasPrefix(strings.TrimSpace(v), "tidegate; hit")
			}
			r.fields = append(r.fields, ttl.ReplaceAllString(f, "ttl=N"))
		}
		slices.Sort(r.fields)
		return r
	}
	compare := func(path, extra string) response {
		t.Helper()
		var fast response
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			before := fastServed()
			f := exchange("fast", method, path, extra)
			if after := fastServed(); after != before+1 {
				t.Errorf("%s %s: fast path served %v requests, want 1", method, path, after-before)
			}
			g := exchange("general", method, path, extra)
			if !f.hit || !g.hit {
				t.Errorf("%s %s: hit on the fast path %v, on net/http %v", method, path, f.hit, g.hit)
			}
			if f.status != g.status || f.body != g.body {
				t.Errorf("%s %s: fast %q %q, net/http %q %q", method, path, f.status, f.body, g.status, g.body)
			}
			if !slices.Equal(f.fields, g.fields) {
				t.Errorf("%s %s: fields differ:\nfast:     %q\nnet/http: %q", method, path, f.fields, g.fields)
			}
			if method == http.MethodGet {
				fast = f
			}
		}
		return fast
	}

	for _, tc := range []struct{ path, extra string }{
		{"/empty-type", ""},
		{"/status-599", ""},
		{"/case", ""},
		{"/vary", "Accept-Encoding: gzip\r\nX-B: 1\r\n"},
		{"/reval", ""},
	} {
		exchange("general", http.MethodGet, tc.path, tc.extra) // stores the response
		compare(tc.path, tc.extra)
	}

	// A revalidation on net/http changes the stored fields, and the next
	// fast hit sends them (RFC 9111 section 4.3.4).
	exchange("general", http.MethodGet, "/reval", "Cache-Control: no-cache\r\n")
	after := compare("/reval", "")
	for _, want := range []string{"Cache-Control: max-age=7200", "X-New: 3", "X-Old: 2"} {
		if !slices.Contains(after.fields, want) {
			t.Errorf("fast hit after revalidation lacks %q: %q", want, after.fields)
		}
	}

	// A purge through the admin API removes the entry for the fast path too.
	status, body := l.purge(t, http.MethodPost, url.Values{"url": {"http://" + cacheHost + "/case"}}, cacheAdminToken)
	if status != http.StatusOK || !strings.Contains(body, `"purged":1`) {
		t.Fatalf("purge /case: %d %s", status, body)
	}
	if r := exchange("fast", http.MethodGet, "/case", ""); r.hit {
		t.Errorf("GET /case after purge: a hit, want a miss: %q", r.fields)
	}
}
