//go:build integration

package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// compressBackend serves /text, a fixed text body, and /events, an event
// stream that writes event N+1 only after the test acknowledges event N on
// acks. A proxy that holds an event back therefore stalls the stream.
type compressBackend struct {
	addr   string
	text   []byte
	acks   chan int
	events int
}

func startCompressBackend(t *testing.T) *compressBackend {
	t.Helper()
	// Words from a small vocabulary compress well but not to nothing, so
	// the comparison covers many encoder blocks.
	rng := rand.New(rand.NewPCG(1, 2))
	words := []string{"tide", "gate", "proxy", "limit", "route", "cache", "stream", "event", "byte", "flow"}
	var text bytes.Buffer
	for text.Len() < 300<<10 {
		fmt.Fprintf(&text, "%s %d ", words[rng.IntN(len(words))], rng.IntN(1000))
	}
	b := &compressBackend{text: text.Bytes(), acks: make(chan int), events: 5}

	mux := http.NewServeMux()
	mux.HandleFunc("/text", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(b.text)))
		w.Header().Set("ETag", `"text-v1"`)
		_, _ = w.Write(b.text)
	})
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		rc := http.NewResponseController(w)
		for n := 1; n <= b.events; n++ {
			// Pad each event past the compressor's minimum size, so only
			// the event-stream rule keeps it uncompressed.
			fmt.Fprintf(w, "id: %d\ndata: event %d %s\n\n", n, n, strings.Repeat("x", 2048))
			if err := rc.Flush(); err != nil {
				return
			}
			select {
			case got := <-b.acks:
				if got != n {
					return
				}
			case <-time.After(10 * time.Second):
				// The client never acknowledged event n: the proxy did
				// not deliver it. Ending the stream fails the test.
				return
			case <-r.Context().Done():
				return
			}
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	b.addr = ln.Addr().String()
	return b
}

func decode(t *testing.T, encoding string, body []byte) []byte {
	t.Helper()
	var r io.Reader
	switch encoding {
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("gzip header: %v", err)
		}
		r = zr
	case "br":
		r = brotli.NewReader(bytes.NewReader(body))
	case "zstd":
		zr, err := zstd.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("zstd header: %v", err)
		}
		defer zr.Close()
		r = zr
	default:
		t.Fatalf("unknown encoding %q", encoding)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decode %s: %v", encoding, err)
	}
	return out
}

func startCompressL7(t *testing.T, backend, logPath string) string {
	t.Helper()
	listen := freeAddr(t)
	startL7(t, t.TempDir(), fmt.Sprintf(`
listeners:
  - name: edge
    address: %s
    policy:
      compress: {encodings: [zstd, br, gzip]}
routes:
  - {name: all, upstream: app}
upstreams:
  - name: app
    backends:
      - address: %s
access_log:
  path: %s
`, listen, backend, logPath))
	return listen
}

// TestL7PolicyCompressEncodings fetches a 300 KiB text body through the real
// binary once per encoding and checks that it decodes to the backend's exact
// bytes, with the headers a compressed response must carry.
func TestL7PolicyCompressEncodings(t *testing.T) {
	backend := startCompressBackend(t)
	logPath := filepath.Join(t.TempDir(), "access.log")
	addr := startCompressL7(t, backend.addr, logPath)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	t.Cleanup(client.CloseIdleConnections)

	for _, enc := range []string{"gzip", "br", "zstd"} {
		t.Run(enc, func(t *testing.T) {
			req := newRequest(t, http.MethodGet, "http://"+addr+"/text", nil)
			req.Header.Set("Accept-Encoding", enc)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.Header.Get("Content-Encoding"); got != enc {
				t.Fatalf("Content-Encoding %q, want %q", got, enc)
			}
			if resp.ContentLength != -1 {
				t.Errorf("compressed response has Content-Length %d", resp.ContentLength)
			}
			if !strings.Contains(resp.Header.Get("Vary"), "Accept-Encoding") {
				t.Errorf("Vary %q lacks Accept-Encoding", resp.Header.Get("Vary"))
			}
			if got := resp.Header.Get("ETag"); got != `W/"text-v1"` {
				t.Errorf("ETag %q, want the weakened W/\"text-v1\"", got)
			}
			if len(body) >= len(backend.text) {
				t.Errorf("%s body is %d bytes, not smaller than the %d sent", enc, len(body), len(backend.text))
			}
			if got := decode(t, enc, body); !bytes.Equal(got, backend.text) {
				t.Errorf("%s body decodes to %d bytes that differ from the backend's %d", enc, len(got), len(backend.text))
			}
		})
	}

	// Without Accept-Encoding the body passes unchanged.
	resp, err := client.Get("http://" + addr + "/text")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ce := resp.Header.Get("Content-Encoding"); ce != "" {
		t.Errorf("identity request got Content-Encoding %q", ce)
	}
	if !bytes.Equal(body, backend.text) {
		t.Errorf("identity body differs from the backend's")
	}

	eventually(t, 5*time.Second, "access log lines for four requests", func() bool {
		return len(accessLogLines(t, logPath)) >= 4
	})
	encodings := map[string]bool{}
	for _, line := range accessLogLines(t, logPath) {
		if enc, ok := line["content_encoding"].(string); ok {
			encodings[enc] = true
		}
	}
	for _, enc := range []string{"gzip", "br", "zstd"} {
		if !encodings[enc] {
			t.Errorf("access log has no line with content_encoding %q", enc)
		}
	}
}

// TestL7PolicyEventStreamDelivery reads an event stream through the real
// binary on a route that compresses, with a client that accepts every
// encoding. The backend produces event N+1 only after the client has
// received event N, so the stream completes only if the proxy delivers
// each event as soon as the backend flushes it.
func TestL7PolicyEventStreamDelivery(t *testing.T) {
	backend := startCompressBackend(t)
	addr := startCompressL7(t, backend.addr, filepath.Join(t.TempDir(), "access.log"))
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	t.Cleanup(client.CloseIdleConnections)

	req := newRequest(t, http.MethodGet, "http://"+addr+"/events", nil)
	req.Header.Set("Accept-Encoding", "gzip, br, zstd")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ce := resp.Header.Get("Content-Encoding"); ce != "" {
		t.Errorf("event stream got Content-Encoding %q, want none", ce)
	}

	rd := bufio.NewReader(resp.Body)
	for n := 1; n <= backend.events; n++ {
		id, err := readEventID(rd)
		if err != nil {
			t.Fatalf("event %d: %v (the proxy held it back or the backend gave up)", n, err)
		}
		if id != n {
			t.Fatalf("event id %d, want %d", id, n)
		}
		select {
		case backend.acks <- n:
		case <-time.After(10 * time.Second):
			t.Fatalf("backend did not wait for the acknowledgement of event %d", n)
		}
	}
	if rest, _ := io.ReadAll(rd); len(rest) != 0 {
		t.Errorf("%d bytes after the last event", len(rest))
	}
}

// readEventID reads one server-sent event and returns its id field.
func readEventID(rd *bufio.Reader) (int, error) {
	id := -1
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			return 0, err
		}
		line = strings.TrimRight(line, "\n")
		if line == "" {
			if id < 0 {
				return 0, fmt.Errorf("event without id")
			}
			return id, nil
		}
		if v, ok := strings.CutPrefix(line, "id: "); ok {
			if id, err = strconv.Atoi(v); err != nil {
				return 0, fmt.Errorf("event id %q: %w", v, err)
			}
		}
	}
}
