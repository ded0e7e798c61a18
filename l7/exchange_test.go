package l7

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const h2cListener = `
  access_log: {path: "off"}
  listeners:
    - name: h2c
      address: 127.0.0.1:0
      h2c: true
  routes:
    - name: all
      match: {path_prefix: /}
      upstream: web
  upstreams:
    - name: web
      max_idle_per_backend: 8
      backends: [{address: %q}]
`

// h2Exchange sends one request on a new HTTP/2 connection with prior
// knowledge and returns the response status and body.
func h2Exchange(t *testing.T, addr string, fields [][2]string) (string, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range fields {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndHeaders: true, EndStream: true}); err != nil {
		t.Fatal(err)
	}

	var status string
	var body strings.Builder
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		if f.Name == ":status" {
			status = f.Value
		}
	})
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the response: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			if f.StreamID != 1 {
				continue
			}
			if _, err := dec.Write(f.HeaderBlockFragment()); err != nil {
				t.Fatal(err)
			}
			if f.StreamEnded() {
				return status, body.String()
			}
		case *http2.DataFrame:
			body.Write(f.Data())
			if f.StreamEnded() {
				return status, body.String()
			}
		case *http2.RSTStreamFrame:
			return "reset " + f.ErrCode.String(), body.String()
		case *http2.GoAwayFrame:
			return "goaway " + f.ErrCode.String(), body.String()
		}
	}
}

// TestHTTP2RequestsOnDirectConnections sends HTTP/2 requests without a
// body, which the general server forwards on the pool's direct
// connections, and checks the response, the connection reuse and the
// handling of a target that an HTTP/1.1 request line cannot carry.
func TestHTTP2RequestsOnDirectConnections(t *testing.T) {
	backend, conns := countingBackend(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s %s", r.Method, r.RequestURI, r.Header.Get("X-Forwarded-Proto"))
	})
	_, addrs := startL7(t, fmt.Sprintf(h2cListener, strings.TrimPrefix(backend.URL, "http://")))

	request := func(method, path string) [][2]string {
		return [][2]string{{":method", method}, {":scheme", "http"}, {":authority", "a.test"}, {":path", path}}
	}
	for i := range 3 {
		status, body := h2Exchange(t, addrs["h2c"], request("GET", fmt.Sprintf("/item?n=%d", i)))
		if want := fmt.Sprintf("GET /item?n=%d http", i); status != "200" || body != want {
			t.Errorf("request %d: got %s %q, want 200 %q", i, status, body, want)
		}
	}
	if status, body := h2Exchange(t, addrs["h2c"], request("DELETE", "/item")); status != "200" || body != "DELETE /item http" {
		t.Errorf("DELETE: got %s %q", status, body)
	}
	if got := conns.Load(); got != 1 {
		t.Errorf("backend accepted %d connections for four sequential requests, want 1", got)
	}

	// A space in the query would end the request line's target early.
	status, _ := h2Exchange(t, addrs["h2c"], request("GET", "/a?b= HTTP/1.1"))
	if status != "400" {
		t.Errorf("target with a space: got %s, want 400", status)
	}
}

// TestInformationalRelay sends a 1xx response with hop-by-hop fields
// before the final one, on both paths. The 1xx response must lose those
// fields and keep the others, and the final response must keep its
// X-Request-Id, which ReverseProxy clears after each 1xx.
func TestInformationalRelay(t *testing.T) {
	addr := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		for readRequestHead(r) != "" {
			if _, err := io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nConnection: X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
				return
			}
		}
	})
	_, addrs := startL7(t, fmt.Sprintf(twoListeners, addr))
	for _, listener := range []string{"fast", "general"} {
		c, err := net.Dial("tcp", addrs[listener])
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
		r := bufio.NewReader(c)
		hints, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("%s: %v", listener, err)
		}
		final, err := http.ReadResponse(r, nil)
		c.Close()
		if err != nil {
			t.Fatalf("%s: final response: %v", listener, err)
		}

		if hints.StatusCode != 103 {
			t.Fatalf("%s: first response %d, want 103", listener, hints.StatusCode)
		}
		if hints.Header.Get("Link") == "" {
			t.Errorf("%s: 103 lost its Link field: %v", listener, hints.Header)
		}
		for _, name := range []string{"Connection", "X-Hop", "Keep-Alive"} {
			if v := hints.Header.Get(name); v != "" {
				t.Errorf("%s: 103 carries hop-by-hop %s: %q", listener, name, v)
			}
		}
		if final.StatusCode != 200 {
			t.Errorf("%s: final status %d, want 200", listener, final.StatusCode)
		}
		if final.Header.Get("X-Request-Id") == "" {
			t.Errorf("%s: final response has no X-Request-Id: %v", listener, final.Header)
		}
	}
}

// TestPragmaNoCacheLeftAlone checks that a response with "Pragma:
// no-cache" and no Cache-Control reaches the client without the
// Cache-Control that Go's response parser adds, on both paths, and that a
// Cache-Control the backend sent stays.
func TestPragmaNoCacheLeftAlone(t *testing.T) {
	addr := rawBackend(t, func(c net.Conn, r *bufio.Reader) {
		for {
			head := readRequestHead(r)
			if head == "" {
				return
			}
			response := "HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 2\r\n\r\nok"
			if strings.Contains(head, "/sent") {
				response = "HTTP/1.1 200 OK\r\nPragma: no-cache\r\ncache-control : no-cache\r\nContent-Length: 2\r\n\r\nok"
			}
			if _, err := io.WriteString(c, response); err != nil {
				return
			}
		}
	})
	_, addrs := startL7(t, fmt.Sprintf(twoListeners, addr))
	for _, listener := range []string{"fast", "general"} {
		for path, want := range map[string]bool{"/": false, "/sent": true} {
			// Go's client parser would add the field itself, so the
			// response is read as bytes.
			raw := rawExchange(t, addrs[listener], "GET "+path+" HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n", 2*time.Second)
			head := strings.ToLower(raw)
			if got := strings.Contains(head, "\r\ncache-control: no-cache\r\n"); got != want {
				t.Errorf("%s %s: Cache-Control sent %v, want %v:\n%s", listener, path, got, want, raw)
			}
			if !strings.Contains(head, "\r\npragma: no-cache\r\n") {
				t.Errorf("%s %s: Pragma missing:\n%s", listener, path, raw)
			}
		}
	}
}
