//go:build integration

package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestL7ExchangeAttack runs the real binary with an HTTP/2 cleartext
// listener in front of a raw HTTP/1.1 backend, so requests without a body
// go on the pool's direct connections. It attacks that path with a method
// that would rewrite the request line, an international authority, and
// streams reset while the backend holds a response open.
func TestL7ExchangeAttack(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var lines []string
	closed := make(chan string, 8)
	sent := make(chan struct{}, 8)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
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
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, host, err := readHead(r)
					if err != nil {
						return
					}
					mu.Lock()
					lines = append(lines, line+" "+host)
					mu.Unlock()
					if !strings.HasPrefix(line, "GET /hold") {
						_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
						continue
					}
					// Head and part of the body, then nothing until the
					// proxy closes the connection.
					_, _ = io.WriteString(c, "HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial")
					sent <- struct{}{}
					_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
					_, err = r.ReadByte()
					closed <- fmt.Sprintf("%s: %v", line, err)
					return
				}
			}()
		}
	}()

	addr := freeAddr(t)
	startL7(t, t.TempDir(), fmt.Sprintf(`listeners:
  - name: h2c
    address: %s
    h2c: true
routes:
  - name: all
    upstream: web
upstreams:
  - name: web
    max_idle_per_backend: 8
    outlier: {consecutive_failures: 1, cooldown: 1m}
    backends:
      - address: %s
`, addr, ln.Addr()))

	// The inspection layer rejects what an HTTP/1.1 request line could
	// not carry before it reaches a backend.
	for _, tc := range [][3]string{{"GET /admin", "a.test", "/"}, {"GET", "a b", "/"}, {"GET", "a.test", "/q?a= HTTP/1.1"}} {
		if got := h2Request(t, addr, tc[0], tc[1], tc[2], nil); got != "400" {
			t.Errorf("method %q, authority %q, path %q: got %s, want 400", tc[0], tc[1], tc[2], got)
		}
	}
	if got := h2Request(t, addr, "GET", "bücher.test", "/idn", nil); got != "200" {
		t.Errorf("authority bücher.test: got %s, want 200", got)
	}
	// The reset reaches the proxy while it reads the head from its
	// buffer or the body from the socket, whichever comes first.
	for i := range 5 {
		path := fmt.Sprintf("/hold/%d", i)
		if got := h2Request(t, addr, "GET", "a.test", path, sent); got != "reset" {
			t.Errorf("GET %s: got %s, want the stream reset by the client", path, got)
		}
		select {
		case got := <-closed:
			// A close with response bytes still unread in the proxy's
			// receive buffer is sent as a reset instead of a FIN.
			if !strings.HasSuffix(got, "EOF") && !strings.HasSuffix(got, "connection reset by peer") {
				t.Errorf("backend read after the client reset %s: %s, want EOF or a reset", path, got)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("backend connection of %s still open after the client reset it", path)
		}
	}
	if got := h2Request(t, addr, "GET", "a.test", "/after", nil); got != "200" {
		t.Errorf("GET /after the resets: got %s, want 200", got)
	}

	mu.Lock()
	defer mu.Unlock()
	for _, l := range lines {
		if strings.Contains(l, "/admin") {
			t.Errorf("backend received %q for a request with an invalid method", l)
		}
		if strings.HasPrefix(l, "GET /idn ") && l != "GET /idn HTTP/1.1 xn--bcher-kva.test" {
			t.Errorf("backend received %q, want Host xn--bcher-kva.test", l)
		}
	}
}

// readHead reads one request head and returns its request line and Host.
func readHead(r *bufio.Reader) (line, host string, err error) {
	for first := true; ; first = false {
		l, err := r.ReadString('\n')
		if err != nil {
			return "", "", err
		}
		l = strings.TrimRight(l, "\r\n")
		switch {
		case l == "":
			return line, host, nil
		case first:
			line = l
		case strings.HasPrefix(strings.ToLower(l), "host:"):
			host = strings.TrimSpace(l[len("host:"):])
		}
	}
}

// h2Request sends one request on a new HTTP/2 connection with prior
// knowledge and returns the response status. With resetAfter set, it
// resets the stream once resetAfter delivers and returns "reset".
func h2Request(t *testing.T, addr, method, authority, path string, resetAfter <-chan struct{}) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", method}, {":scheme", "http"}, {":authority", authority}, {":path", path}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndHeaders: true, EndStream: true}); err != nil {
		t.Fatal(err)
	}

	if resetAfter != nil {
		select {
		case <-resetAfter:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s %s: backend sent no response", method, path)
		}
		if err := fr.WriteRSTStream(1, http2.ErrCodeCancel); err != nil {
			t.Fatal(err)
		}
		return "reset"
	}

	status := ""
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		if f.Name == ":status" {
			status = f.Value
		}
	})
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("%s %s: reading the response: %v", method, path, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			if _, err := dec.Write(f.HeaderBlockFragment()); err != nil {
				t.Fatal(err)
			}
			if f.StreamEnded() {
				return status
			}
		case *http2.DataFrame:
			if f.StreamEnded() {
				return status
			}
		case *http2.RSTStreamFrame:
			return "reset by proxy " + f.ErrCode.String()
		}
	}
}
