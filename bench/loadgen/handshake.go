package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"
)

// handshakeConfig describes one handshake load run.
type handshakeConfig struct {
	Addr        string
	ServerName  string
	Path        string
	Concurrency int
	Duration    time.Duration
	// Resume shares one session cache between all connections so every
	// handshake after the first few resumes a session from a ticket.
	Resume bool
	Roots  *x509.CertPool
}

// handshakeResult contains the counts and latencies of one run. Latencies
// contain, per successful connection, the time from dial to the end of the
// response body, sorted.
type handshakeResult struct {
	Connections int
	Resumed     int
	Errors      int
	FirstError  error
	Elapsed     time.Duration
	Latencies   []time.Duration
}

func runHandshake(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("handshake", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "TLS `address` host:port to connect to, in 127.0.0.0/8 (required)")
	caFile := fs.String("ca", "", "PEM `file` with the certificate that signs the server's (required)")
	serverName := fs.String("server-name", "localhost", "SNI `name` sent and verified")
	path := fs.String("path", "/", "request `path`")
	conc := fs.Int("c", 16, "`number` of connections open at once")
	dur := fs.Duration("d", 5*time.Second, "how long to run")
	resume := fs.Bool("resume", false, "resume TLS sessions from tickets instead of making full handshakes")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := checkLoopback(*addr); err != nil {
		fmt.Fprintln(stderr, "loadgen handshake:", err)
		return 2
	}
	if *conc < 1 || *dur <= 0 {
		fmt.Fprintln(stderr, "loadgen handshake: -c must be at least 1 and -d positive")
		return 2
	}
	pem, err := os.ReadFile(*caFile)
	if err != nil {
		fmt.Fprintln(stderr, "loadgen handshake:", err)
		return 2
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		fmt.Fprintf(stderr, "loadgen handshake: no PEM certificate found in %s\n", *caFile)
		return 2
	}

	res := handshakeLoad(context.Background(), handshakeConfig{
		Addr: *addr, ServerName: *serverName, Path: *path,
		Concurrency: *conc, Duration: *dur, Resume: *resume, Roots: roots,
	})
	if res.FirstError != nil {
		fmt.Fprintln(stderr, "loadgen handshake: first error:", res.FirstError)
	}
	fmt.Fprintln(stdout, res.summary())
	if res.Connections == 0 {
		return 1
	}
	return 0
}

// summary formats the result as key=value pairs for the harness to parse.
func (r handshakeResult) summary() string {
	rate := 0.0
	if r.Elapsed > 0 {
		rate = float64(r.Connections) / r.Elapsed.Seconds()
	}
	return fmt.Sprintf("connections=%d resumed=%d errors=%d seconds=%.3f rate=%.1f p50_ms=%.3f p99_ms=%.3f",
		r.Connections, r.Resumed, r.Errors, r.Elapsed.Seconds(), rate,
		ms(percentile(r.Latencies, 50)), ms(percentile(r.Latencies, 99)))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile returns the p-th percentile (nearest rank) of sorted latencies.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := (p*len(sorted) + 99) / 100
	return sorted[max(rank, 1)-1]
}

// handshakeLoad opens connections from cfg.Concurrency workers until
// cfg.Duration has passed. Each connection makes one TLS handshake and one
// request with "Connection: close".
func handshakeLoad(ctx context.Context, cfg handshakeConfig) handshakeResult {
	tlsConf := &tls.Config{
		ServerName: cfg.ServerName,
		RootCAs:    cfg.Roots,
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"http/1.1"},
		// OpenSSL 3.0, which nginx and HAProxy use on Debian 12, has no
		// X25519MLKEM768, so offering only X25519 gives every server the
		// same key exchange to compute.
		CurvePreferences: []tls.CurveID{tls.X25519},
	}
	if cfg.Resume {
		tlsConf.ClientSessionCache = tls.NewLRUClientSessionCache(64)
	}
	request := []byte("GET " + cfg.Path + " HTTP/1.1\r\nHost: " + cfg.ServerName + "\r\nConnection: close\r\n\r\n")

	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()

	var (
		mu  sync.Mutex
		res handshakeResult
		wg  sync.WaitGroup
	)
	start := time.Now()
	for range cfg.Concurrency {
		wg.Go(func() {
			var lat []time.Duration
			var conns, resumed, errs int
			var firstErr error
			for ctx.Err() == nil {
				t0 := time.Now()
				didResume, err := oneTLSRequest(cfg.Addr, tlsConf, request)
				if err != nil {
					errs++
					if firstErr == nil {
						firstErr = err
					}
					continue
				}
				lat = append(lat, time.Since(t0))
				conns++
				if didResume {
					resumed++
				}
			}
			mu.Lock()
			res.Connections += conns
			res.Resumed += resumed
			res.Errors += errs
			res.Latencies = append(res.Latencies, lat...)
			if res.FirstError == nil {
				res.FirstError = firstErr
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	slices.Sort(res.Latencies)
	return res
}

// oneTLSRequest dials addr, makes a TLS handshake, sends request and reads
// the whole response. It reports whether the handshake resumed a session.
func oneTLSRequest(addr string, conf *tls.Config, request []byte) (bool, error) {
	raw, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return false, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))

	conn := tls.Client(raw, conf)
	if err := conn.Handshake(); err != nil {
		return false, fmt.Errorf("tls handshake with %s: %w", addr, err)
	}
	if _, err := conn.Write(request); err != nil {
		return false, fmt.Errorf("write request: %w", err)
	}
	// Reading the response also reads the session ticket, which TLS 1.3
	// servers send after the handshake, into the session cache.
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return false, fmt.Errorf("read response: %w", err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return false, fmt.Errorf("read response body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("unexpected status %s", resp.Status)
	}
	return conn.ConnectionState().DidResume, nil
}
