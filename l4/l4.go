package l4

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

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

	mu  sync.Mutex // serializes Start, Reload and Drain
	cfg *config.L4
}

// New builds the L4 tier from f without binding anything, and registers the
// admin endpoints GET /vips and POST /vips/{vip}/reals/{real}/weight on adm.
func New(f *config.File, logger *slog.Logger, adm *admin.Server) (*Server, error) {
	if f.L4 == nil {
		return nil, errors.New("l4: configuration has no l4 section")
	}
	logger = logger.With("component", "l4")
	engineName, err := chooseEngine(f.L4.Dataplane.Mode, logger)
	if err != nil {
		return nil, err
	}

	b, err := NewBalancer(f.L4, logger, adm.Registry)
	if err != nil {
		return nil, err
	}
	b.m.engine.WithLabelValues(engineName).Set(1)
	eng, err := userspace.New(logger.With("engine", engineName), adm.Registry)
	if err != nil {
		return nil, err
	}
	registerAdmin(adm, b, logger)
	return &Server{logger: logger, balancer: b, engine: eng, cfg: f.L4}, nil
}

// chooseEngine returns the engine for dataplane.mode.
func chooseEngine(mode string, logger *slog.Logger) (string, error) {
	switch mode {
	case "userspace":
		return "userspace", nil
	case "auto":
		// TODO: try the XDP engine first once l4/xdp is wired in here.
		logger.Info("dataplane auto: using the userspace engine", "reason", "xdp engine not built into this binary")
		return "userspace", nil
	default:
		return "", fmt.Errorf("l4: dataplane.mode %q: the xdp engine is not built into this binary (use userspace or auto)", mode)
	}
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
	if err := s.engine.Prepare(addresses(f.L4)); err != nil {
		return fmt.Errorf("l4: %w", err)
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
			MaxConnections: vc.MaxConnections,
			DialAttempts:   vc.DialAttempts,
			Picker:         s.balancer.VIP(vc.Name),
		})
	}
	return out
}
