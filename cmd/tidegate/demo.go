package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/tidegate/tidegate/l4"
	"github.com/tidegate/tidegate/shared/admin"
	"github.com/tidegate/tidegate/shared/certgen"
	"github.com/tidegate/tidegate/shared/config"
	"github.com/tidegate/tidegate/shared/echo"
	"github.com/tidegate/tidegate/shared/lifecycle"
	"github.com/tidegate/tidegate/shared/logging"
)

// Port offsets from --base-port, one per demo process.
const (
	offVIP      = 443 // L4 VIP: base+443
	offL4Admin  = 100
	offL7Data   = 444 // L7 nodes: base+444, base+445
	offL7Admin  = 101 // L7 admin: base+101, base+102
	offBackends = 81  // backends: base+81 .. base+83
)

// demoNode is one tier process run inside the demo.
type demoNode struct {
	name  string
	svc   lifecycle.Service
	admin *admin.Server
}

func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.Int("base-port", 8000, "`port` the demo's fixed ports are offsets from: VIP base+443, L7 nodes base+444 and base+445, backends base+81..83, admin listeners base+100..102")
	logFormat := fs.String("log-format", "text", "log `format`: text or json")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: tidegate demo [flags]")
		fmt.Fprintln(stderr)
		fmt.Fprintln(stderr, "Runs on 127.0.0.1 an L4 balancer, two L7 proxies that terminate TLS with a")
		fmt.Fprintln(stderr, "self-signed certificate, and three echo backends. Ctrl-C stops everything.")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *base < 1 || *base+offL7Data+1 > 65535 {
		fmt.Fprintf(stderr, "tidegate demo: --base-port %d leaves the demo ports outside 1..65535\n", *base)
		return 2
	}

	logger, _, err := logging.New(stderr, "info", *logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "tidegate demo: %v\n", err)
		return 2
	}
	dir, err := os.MkdirTemp("", "tidegate-demo-")
	if err != nil {
		fmt.Fprintf(stderr, "tidegate demo: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)

	if err := demo(*base, dir, logger, stdout); err != nil {
		logger.Error("demo failed", "err", err)
		return 1
	}
	return 0
}

func demo(base int, dir string, logger *slog.Logger, stdout io.Writer) error {
	addr := func(off int) string { return fmt.Sprintf("127.0.0.1:%d", base+off) }

	certPEM, keyPEM, err := certgen.SelfSigned("localhost", "127.0.0.1")
	if err != nil {
		return err
	}
	certFile := filepath.Join(dir, "cert.pem")
	keyFile := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return err
	}

	// Backends first, so the L7 health checks find them up.
	var backends []*http.Server
	for i := range 3 {
		ln, err := net.Listen("tcp", addr(offBackends+i))
		if err != nil {
			return fmt.Errorf("backend %d: %w", i+1, err)
		}
		srv := &http.Server{Handler: &echo.Handler{Name: fmt.Sprintf("backend-%d", i+1)}, ReadHeaderTimeout: 10 * time.Second}
		backends = append(backends, srv)
		go func() { _ = srv.Serve(ln) }()
	}
	defer func() {
		for _, b := range backends {
			_ = b.Close()
		}
	}()

	var nodes []demoNode
	for i := range 2 {
		doc := fmt.Sprintf(demoL7Config, addr(offL7Admin+i), fmt.Sprintf("l7-%d", i+1), addr(offL7Data+i),
			certFile, keyFile, addr(offBackends), addr(offBackends+1), addr(offBackends+2))
		n, err := startDemoNode(fmt.Sprintf("l7-%d", i+1), doc, logger, newL7)
		if err != nil {
			stopDemo(nodes, logger)
			return err
		}
		nodes = append(nodes, n)
	}
	doc := fmt.Sprintf(demoL4Config, addr(offL4Admin), addr(offVIP),
		addr(offL7Data), addr(offL7Admin), addr(offL7Data+1), addr(offL7Admin+1))
	n, err := startDemoNode("l4", doc, logger, func(f *config.File, lg *slog.Logger, adm *admin.Server) (lifecycle.Service, error) {
		return l4.New(f, lg, adm)
	})
	if err != nil {
		stopDemo(nodes, logger)
		return err
	}
	// The L4 stops first on the way out, so it goes at the front.
	nodes = append([]demoNode{n}, nodes...)

	vipPort := base + offVIP
	fmt.Fprintf(stdout, `
tidegate demo is running on 127.0.0.1:

  client -> L4 VIP      https://localhost:%d  (PROXY v2 to the L7 nodes)
            L7 nodes    127.0.0.1:%d, 127.0.0.1:%d  (TLS, PROXY required from 127.0.0.1)
            backends    127.0.0.1:%d..%d  (echo what they receive)

Try:
  curl --cacert %s https://localhost:%d/hello
  (the backend's answer shows X-Forwarded-For and X-Real-IP: your address, not the L4's)

Metrics and health:
  http://%s/metrics   (L4)    http://%s/vips
  http://%s/metrics   (L7 1)  http://%s/metrics   (L7 2)
  http://%s/readyz
  bin/tidegate status --admin %s   (routes, backends and rates of L7 1)

Press Ctrl-C to stop.
`, vipPort, base+offL7Data, base+offL7Data+1, base+offBackends, base+offBackends+2,
		certFile, vipPort, addr(offL4Admin), addr(offL4Admin), addr(offL7Admin), addr(offL7Admin+1), addr(offL7Admin),
		addr(offL7Admin))

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	sig := <-sigs
	logger.Info("stopping demo", "signal", sig.String())
	stopDemo(nodes, logger)
	return nil
}

func startDemoNode(name, doc string, logger *slog.Logger, build func(*config.File, *slog.Logger, *admin.Server) (lifecycle.Service, error)) (demoNode, error) {
	f, err := config.Parse([]byte(doc))
	if err != nil {
		return demoNode{}, fmt.Errorf("%s config: %w", name, err)
	}
	lg := logger.With("node", name)
	adm := admin.New("", false, lg.With("component", "admin"))
	svc, err := build(f, lg, adm)
	if err != nil {
		return demoNode{}, fmt.Errorf("%s: %w", name, err)
	}
	if err := adm.Listen(f.Admin.Address); err != nil {
		return demoNode{}, fmt.Errorf("%s admin: %w", name, err)
	}
	if err := svc.Start(); err != nil {
		_ = adm.Shutdown(context.Background())
		return demoNode{}, fmt.Errorf("%s: %w", name, err)
	}
	adm.SetReady(true)
	return demoNode{name: name, svc: svc, admin: adm}, nil
}

func stopDemo(nodes []demoNode, logger *slog.Logger) {
	for _, n := range nodes {
		n.admin.SetReady(false)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := n.svc.Drain(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			logger.Warn("drain failed", "node", n.name, "err", err)
		}
		_ = n.admin.Shutdown(ctx)
		cancel()
	}
}

const demoL7Config = `
admin: {address: %q}
drain_timeout: 5s
l7:
  listeners:
    - name: %s
      address: %q
      proxy_protocol:
        trusted: [127.0.0.1/32]
        timeout: 5s
      tls:
        certificates:
          - {cert_file: %q, key_file: %q}
  routes:
    - name: everything
      match: {path_prefix: /}
      upstream: echo
  upstreams:
    - name: echo
      balance: round_robin
      backends:
        - address: %q
        - address: %q
        - address: %q
      health_check: {type: http, path: /, interval: 2s, timeout: 1s}
`

const demoL4Config = `
admin: {address: %q}
drain_timeout: 5s
l4:
  dataplane: {mode: userspace}
  vips:
    - name: https
      address: %q
      proxy_protocol: v2
      health_check: {type: http, path: /readyz, interval: 1s, timeout: 500ms, rise: 2, fall: 2}
      reals:
        - {address: %q, health_address: %q}
        - {address: %q, health_address: %q}
`
