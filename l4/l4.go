// Package l4 is the L4 balancer: VIPs, reals, health checks of reals, and
// the choice between the userspace and XDP engines.
package l4

import (
	"context"
	"errors"
	"log/slog"

	"github.com/tidegate/tidegate/shared/admin"
	"github.com/tidegate/tidegate/shared/config"
)

// Server runs the L4 tier. It implements lifecycle.Service.
type Server struct{}

// New builds the L4 tier from f without binding anything.
func New(f *config.File, logger *slog.Logger, adm *admin.Server) (*Server, error) {
	return nil, errors.New("l4: not built yet")
}

func (s *Server) Start() error                    { return nil }
func (s *Server) Reload(f *config.File) error     { return nil }
func (s *Server) Drain(ctx context.Context) error { return nil }
