package l4

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tidegate/tidegate/l4/userspace"
	"github.com/tidegate/tidegate/shared/admin"
	"github.com/tidegate/tidegate/shared/config"
)

// Server runs the L4 tier: the [Balancer] control plane and the engine that
// carries connections. It implements lifecycle.Service.
type Server struct {
	logger   *slog.Logger
	balancer *Balancer
	engine   *userspace.Engine
	reg      prometheus.Registerer
	engines  *prometheus.GaugeVec

	mu   sync.Mutex // serializes Start, Reload and Drain
	cfg  *config.L4
	fast *fastPath // nil unless the XDP engine is attached
	// xdpAttached mirrors fast != nil for readers that must not wait for
	// mu, such as the status page during a slow attach.
	xdpAttached atomic.Bool
	detach      bool
}

// New builds the L4 tier from f without binding anything, and registers the
// admin endpoints GET /vips and POST /vips/{vip}/reals/{real}/weight on adm,
// with the status page at GET /status and GET /status.json.
func New(f *config.File, logger *slog.Logger, adm *admin.Server) (*Server, error) {
	if f.L4 == nil {
		return nil, errors.New("l4: configuration has no l4 section")
	}
	logger = logger.With("component", "l4")

	b, err := NewBalancer(f.L4, logger, adm.Registry)
	if err != nil {
		return nil, err
	}
	// The userspace engine runs in every mode: with XDP attached it takes
	// the connections the program passes to the kernel.
	eng, err := userspace.New(logger.With("engine", "userspace"), adm.Registry)
	if err != nil {
		return nil, err
	}
	registerAdmin(adm, b, logger)
	s := &Server{logger: logger, balancer: b, engine: eng, cfg: f.L4, reg: adm.Registry, engines: b.m.engine}
	registerStatus(adm, b, s.engineName, adm.Registry, logger)
	return s, nil
}

// engineName names the engines carrying new connections, for the status
// page: "xdp" with the userspace engine behind it, or "userspace".
func (s *Server) engineName() string {
	if s.xdpAttached.Load() {
		return "xdp"
	}
	return "userspace"
}

// SetDetach decides what Drain does with the XDP engine. With detach true
// it removes the program and its pinned maps. With false, the default, it
// leaves them attached, so that established XDP connections keep flowing
// until the next start takes them over.
func (s *Server) SetDetach(detach bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.detach = detach
}

// startFastPath attaches the XDP engine for dataplane.mode xdp or auto. In
// auto mode a failure is logged and the userspace engine carries
// everything. In xdp mode the failure is returned.
func (s *Server) startFastPath() error {
	mode := s.cfg.Dataplane.Mode
	if mode == "userspace" {
		s.engines.WithLabelValues("userspace").Set(1)
		s.logger.Info("l4 engine selected", "engine", "userspace", "mode", mode)
		return nil
	}

	fp, err := startFastPath(s.cfg, s.logger.With("engine", "xdp"), s.reg)
	if err != nil {
		if mode == "xdp" {
			return fmt.Errorf("l4: dataplane.mode xdp: %w", err)
		}
		s.engines.WithLabelValues("userspace").Set(1)
		s.logger.Warn("xdp engine not attached, the userspace engine carries every connection", "mode", mode, "err", err)
		return nil
	}
	s.fast = fp
	s.xdpAttached.Store(true)
	s.balancer.Observe(fp.observe)
	fp.drain()
	s.engines.WithLabelValues("xdp").Set(1)
	s.logger.Info("l4 engine selected", "engine", "xdp", "fallback", "userspace", "mode", mode)
	return nil
}

// Balancer returns the control plane, for an engine that observes tables.
func (s *Server) Balancer() *Balancer { return s.balancer }

// Start binds every VIP, starts health checks and begins accepting.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.engine.Prepare(addresses(s.cfg)); err != nil {
		return fmt.Errorf("l4: %w", err)
	}
	s.balancer.Start()
	if err := s.engine.Update(s.engineVIPs(s.cfg)); err != nil {
		s.balancer.Stop()
		_ = s.engine.Drain(context.Background())
		return fmt.Errorf("l4: %w", err)
	}

	// XDP goes in front only once the userspace engine listens, so that
	// a SYN the program passes to the kernel always finds a listener.
	if err := s.startFastPath(); err != nil {
		s.balancer.Stop()
		_ = s.engine.Drain(context.Background())
		return err
	}
	return nil
}

// Reload applies f. New listeners are bound before anything changes, so a
// bind error leaves the running configuration untouched. Reals and VIPs
// that did not change keep their health state and open connections.
func (s *Server) Reload(f *config.File) error {
	if f.L4 == nil {
		return errors.New("l4: new configuration has no l4 section")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.L4.Dataplane.Mode != s.cfg.Dataplane.Mode {
		return fmt.Errorf("l4: dataplane.mode changed from %q to %q, which needs a restart", s.cfg.Dataplane.Mode, f.L4.Dataplane.Mode)
	}
	if !reflect.DeepEqual(f.L4.Dataplane, s.cfg.Dataplane) {
		return errors.New("l4: dataplane settings changed, which needs a restart (the XDP maps and links are sized and attached at start)")
	}
	if err := s.engine.Prepare(addresses(f.L4)); err != nil {
		return fmt.Errorf("l4: %w", err)
	}
	if s.fast != nil {
		s.fast.apply(f.L4)
	}
	s.balancer.Apply(f.L4)
	s.cfg = f.L4
	if err := s.engine.Update(s.engineVIPs(f.L4)); err != nil {
		// Prepare bound every address, so this happens only when the
		// engine is draining.
		return fmt.Errorf("l4: %w", err)
	}
	return nil
}

// Drain stops accepting, stops health checks, and waits for open
// connections until ctx ends.
func (s *Server) Drain(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.engine.Drain(ctx)
	s.balancer.Stop()
	if s.fast != nil {
		if cerr := s.fast.close(s.detach); cerr != nil {
			s.logger.Error("close xdp engine", "detach", s.detach, "err", cerr)
			err = errors.Join(err, cerr)
		}
		s.fast = nil
		s.xdpAttached.Store(false)
	}
	return err
}

func addresses(cfg *config.L4) []string {
	out := make([]string, len(cfg.VIPs))
	for i, v := range cfg.VIPs {
		out[i] = v.Address
	}
	return out
}

func (s *Server) engineVIPs(cfg *config.L4) []userspace.VIP {
	out := make([]userspace.VIP, 0, len(cfg.VIPs))
	for _, vc := range cfg.VIPs {
		version := 2
		if vc.ProxyProtocol == "v1" {
			version = 1
		}
		out = append(out, userspace.VIP{
			Name:           vc.Name,
			Address:        vc.Address,
			ProxyVersion:   version,
			ConnectTimeout: vc.ConnectTimeout.D(),
			IdleTimeout:    vc.IdleTimeout.D(),
			TCPKeepAlive:   vc.TCPKeepAlive.D(),
			MaxConnections: vc.MaxConnections,
			DialAttempts:   vc.DialAttempts,
			Picker:         s.balancer.VIP(vc.Name),
		})
	}
	return out
}
