package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// holdConfig describes one run that opens idle keep-alive connections.
type holdConfig struct {
	Addr string
	// Sources are local addresses dialled from in turn, so that more
	// connections than one address has ephemeral ports can reach one target.
	Sources []netip.Addr
	Count   int
	// Parallel bounds how many connections are being opened at once.
	Parallel int
}

func runHold(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hold", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "HTTP `address` host:port to connect to, in 127.0.0.0/8 (required)")
	count := fs.Int("n", 10000, "`number` of connections to open and keep")
	sources := fs.String("sources", "127.0.0.1", "comma-separated local `addresses` in 127.0.0.0/8 to dial from, used in turn")
	dur := fs.Duration("d", time.Minute, "how long to keep the connections before exiting (SIGTERM ends it sooner)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := checkLoopback(*addr); err != nil {
		fmt.Fprintln(stderr, "loadgen hold:", err)
		return 2
	}
	var srcs []netip.Addr
	for s := range strings.SplitSeq(*sources, ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil || !a.IsLoopback() || !a.Is4() {
			fmt.Fprintf(stderr, "loadgen hold: source %q is not an IPv4 address in 127.0.0.0/8\n", s)
			return 2
		}
		srcs = append(srcs, a)
	}
	if *count < 1 {
		fmt.Fprintln(stderr, "loadgen hold: -n must be at least 1")
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	conns, errs, firstErr := holdOpen(ctx, holdConfig{Addr: *addr, Sources: srcs, Count: *count, Parallel: 64})
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if firstErr != nil {
		fmt.Fprintln(stderr, "loadgen hold: first error:", firstErr)
	}
	// The harness waits for this line before it reads memory figures.
	fmt.Fprintf(stdout, "held=%d errors=%d\n", len(conns), errs)

	select {
	case <-ctx.Done():
	case <-time.After(*dur):
	}
	if len(conns) == 0 {
		return 1
	}
	return 0
}

// holdOpen opens cfg.Count connections, makes one keep-alive request on
// each and returns the connections that completed it, still open.
func holdOpen(ctx context.Context, cfg holdConfig) (conns []net.Conn, errs int, firstErr error) {
	var (
		mu   sync.Mutex
		next atomic.Int64
		wg   sync.WaitGroup
	)
	request := []byte("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
	for range cfg.Parallel {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= cfg.Count {
					return
				}
				src := cfg.Sources[i%len(cfg.Sources)]
				c, err := holdOne(cfg.Addr, src, request)
				mu.Lock()
				if err != nil {
					errs++
					if firstErr == nil {
						firstErr = err
					}
				} else {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return conns, errs, firstErr
}

// holdOne opens one connection from src, makes one request and reads the
// whole response, leaving the connection open and idle.
func holdOne(addr string, src netip.Addr, request []byte) (net.Conn, error) {
	d := net.Dialer{
		Timeout:   5 * time.Second,
		LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)),
		Control:   bindNoPort,
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s from %s: %w", addr, src, err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(request); err != nil {
		c.Close()
		return nil, fmt.Errorf("write request: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("read response: %w", err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || resp.Close {
		c.Close()
		return nil, fmt.Errorf("response on %s: status %d, close %v, body error %v", addr, resp.StatusCode, resp.Close, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// bindNoPort sets IP_BIND_ADDRESS_NO_PORT so that binding a source address
// leaves the port to connect(), which picks one that is free for this
// destination. Without it, bind() needs a port unused by every socket on the
// address, TIME_WAIT ones from earlier scenarios included.
func bindNoPort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// checkLoopback returns an error unless addr is an IPv4 or IPv6 loopback
// host:port, the only targets the benchmarks may send traffic to.
func checkLoopback(addr string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("address %q is not an IP:port: %w", addr, err)
	}
	if !ap.Addr().IsLoopback() {
		return fmt.Errorf("address %q is outside 127.0.0.0/8 and ::1, the only allowed targets", addr)
	}
	return nil
}
