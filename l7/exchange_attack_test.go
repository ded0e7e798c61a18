package l7

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// These tests attack the direct backend exchange of the general path
// (requests without a body to cleartext HTTP/1.1 backends) as a hostile
// client and with misbehaving backends. Each runs the same requests
// through a round-robin pool, which uses direct connections, and a
// hash-balanced pool, which still uses net/http's transport, and compares.

// recordingBackend is an HTTP/1.1 backend on 127.0.0.1 that records the raw
// request heads it reads and lets respond write anything on the
// connection. respond returns false to close the connection.
type recordingBackend struct {
	addr     string
	accepted atomic.Int32
	mu       sync.Mutex
	heads    []string
}

func newRecordingBackend(t *testing.T, respond func(c net.Conn, head string, n int) bool) *recordingBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &recordingBackend{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			b.accepted.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				r := bufio.NewReader(c)
				for n := 0; ; n++ {
					var head strings.Builder
					for {
						line, err := r.ReadString('\n')
						if err != nil {
							return
						}
						head.WriteString(line)
						if line == "\r\n" {
							break
						}
					}
					b.mu.Lock()
					b.heads = append(b.heads, head.String())
					b.mu.Unlock()
					if !respond(c, head.String(), n) {
						return
					}
				}
			}()
		}
	}()
	return b
}

func (b *recordingBackend) received() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.heads...)
}

// normalizeHead sorts the field lines of a request head and drops the
// request ID, which differs per request, so heads sent by the two pools
// compare equal when they carry the same fields.
func normalizeHead(head string) string {
	lines := strings.Split(strings.TrimSuffix(head, "\r\n\r\n"), "\r\n")
	fields := lines[1:]
	kept := fields[:0]
	for _, f := range fields {
		name, _, _ := strings.Cut(strings.ToLower(f), ":")
		if name != "x-request-id" && name != "x-forwarded-port" {
			kept = append(kept, f)
		}
	}
	sort.Strings(kept)
	return lines[0] + "\n" + strings.Join(kept, "\n")
}

const exchangeAttackConfig = `
  access_log: {path: "off"}
  listeners:
    - name: h2c
      address: 127.0.0.1:0
      h2c: true
    - name: general
      address: 127.0.0.2:0
      fast_path: false
  routes:
    - name: all
      match: {path_prefix: /}
      upstream: web
  upstreams:
    - name: web
      %s
      max_idle_per_backend: 8
      response_header_timeout: %s
      backends: [{address: %q}]
`

// startBothPaths starts two L7 servers in front of backend: one whose pool
// uses direct connections and one whose pool uses the transport.
func startBothPaths(t *testing.T, backend, headerTimeout string) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	balances := map[string]string{"direct": "balance: round_robin", "transport": "balance: hash\n      hash_key: client"}
	for via, balance := range balances {
		_, addrs := startL7(t, fmt.Sprintf(exchangeAttackConfig, balance, headerTimeout, backend))
		out[via] = addrs
	}
	return out
}

// rawH1 sends raw bytes on a new connection and returns everything read
// until the server closes or the read fails.
func rawH1(t *testing.T, addr, request string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	_, _ = io.Copy(&out, c)
	return out.String()
}

// TestExchangeAttackHTTP2Fields sends HTTP/2 requests with methods,
// authorities, targets and fields that an HTTP/1.1 request cannot carry as
// they are, and checks that the direct path gives the client the same
// status and the backend the same head as the transport.
func TestExchangeAttackHTTP2Fields(t *testing.T) {
	backend := newRecordingBackend(t, func(c net.Conn, _ string, _ int) bool {
		_, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return err == nil
	})
	both := startBothPaths(t, backend.addr, "5s")
	request := func(method, authority, path string, fields ...[2]string) [][2]string {
		out := [][2]string{{":method", method}, {":scheme", "http"}, {":path", path}}
		if authority != "" {
			out = append(out, [2]string{":authority", authority})
		}
		return append(out, fields...)
	}
	cases := []struct {
		name   string
		fields [][2]string
	}{
		{"international authority", request("GET", "bücher.test", "/")},
		{"ipv6 zone in authority", request("GET", "[fe80::1%25eth0]:80", "/")},
		{"obs-text in query", request("GET", "a.test", "/q?\x80\xff")},
		{"tab in query", request("GET", "a.test", "/q?a\tb")},
		{"number sign in path", request("GET", "a.test", "/p#frag")},
		{"space and obs-text in path", request("GET", "a.test", "/p\x80 x")},
		{"options asterisk", request("OPTIONS", "a.test", "*")},
		{"obs-text in field", request("GET", "a.test", "/", [2]string{"x-obs", "caf\xe9"})},
		{"te trailers", request("GET", "a.test", "/", [2]string{"te", "trailers"})},
		{"expect on bodiless request", request("GET", "a.test", "/", [2]string{"expect", "100-continue"})},
		{"trailer field", request("GET", "a.test", "/", [2]string{"trailer", "x-t"})},
		{"host field beside authority", request("GET", "a.test", "/", [2]string{"host", "other.test"})},
		{"host field alone", request("GET", "", "/", [2]string{"host", "other.test"})},
		{"no authority", request("GET", "", "/")},
		{"space in method", request("G T", "a.test", "/")},
		{"target in method", request("GET /admin", "a.test", "/")},
		{"long target", request("GET", "a.test", "/"+strings.Repeat("a", 100000))},
		{"spaces around value", request("GET", "a.test", "/", [2]string{"x-sp", " lead and trail "})},
		{"empty user agent", request("GET", "a.test", "/", [2]string{"user-agent", ""})},
		{"bodiless post", request("POST", "a.test", "/")},
		{"content-length zero", request("GET", "a.test", "/", [2]string{"content-length", "0"})},
		{"connection field", request("GET", "a.test", "/", [2]string{"connection", "close"})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got [2]string
			for i, via := range []string{"direct", "transport"} {
				before := len(backend.received())
				status, body := h2Exchange(t, both[via]["h2c"], tc.fields)
				heads := backend.received()
				sent := "nothing"
				if len(heads) > before {
					sent = normalizeHead(heads[len(heads)-1])
				}
				got[i] = fmt.Sprintf("%s %q, backend received:\n%s", status, body, sent)
			}
			if got[0] != got[1] {
				t.Errorf("direct path: %s\ntransport: %s", got[0], got[1])
			}
			if strings.Contains(tc.name, "method") && !strings.HasSuffix(got[0], "nothing") {
				t.Errorf("backend received a request with an invalid method: %s", got[0])
			}
		})
	}
}
