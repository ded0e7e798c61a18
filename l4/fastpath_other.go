//go:build !linux

package l4

import (
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tidegate/tidegate/shared/config"
)

type fastPath struct{}

func startFastPath(*config.L4, *slog.Logger, prometheus.Registerer) (*fastPath, error) {
	return nil, errors.New("l4: the xdp engine needs Linux")
}

func (f *fastPath) apply(*config.L4)  {}
func (f *fastPath) observe(*Snapshot) {}
func (f *fastPath) close(bool) error  { return nil }
func (f *fastPath) drain()            {}
