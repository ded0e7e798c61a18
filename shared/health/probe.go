package health

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
)

// TCPProbe returns a probe that succeeds when a TCP connection to addr opens.
func TCPProbe(addr string) Probe {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// HTTPProbe describes an HTTP GET check.
type HTTPProbe struct {
	Address string // host:port to connect to
	Host    string // Host header; Address when empty
	Path    string
	Expect  int // expected status code
	TLS     bool
	// Preamble, when set, is written before the request (and before the
	// TLS handshake), for example a PROXY protocol header.
	Preamble func(local, remote net.Addr) ([]byte, error)
}

// Probe returns the probe function.
func (h HTTPProbe) Probe() Probe {
	return func(ctx context.Context) error {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", h.Address)
		if err != nil {
			return err
		}
		defer conn.Close()
		if dl, ok := ctx.Deadline(); ok {
			_ = conn.SetDeadline(dl)
		}
		if h.Preamble != nil {
			pre, err := h.Preamble(conn.LocalAddr(), conn.RemoteAddr())
			if err != nil {
				return fmt.Errorf("build preamble: %w", err)
			}
			if _, err := conn.Write(pre); err != nil {
				return err
			}
		}
		var rw net.Conn = conn
		if h.TLS {
			host, _, _ := net.SplitHostPort(h.Address)
			tc := tls.Client(conn, &tls.Config{ServerName: host, InsecureSkipVerify: true}) // #nosec G402 -- checks liveness, not identity
			if err := tc.HandshakeContext(ctx); err != nil {
				return fmt.Errorf("tls handshake: %w", err)
			}
			rw = tc
		}

		host := h.Host
		if host == "" {
			host = h.Address
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+h.Path, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "tidegate-health-check")
		req.Close = true
		if err := req.Write(rw); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(rw), req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode != h.Expect {
			return fmt.Errorf("status %d, want %d", resp.StatusCode, h.Expect)
		}
		return nil
	}
}
