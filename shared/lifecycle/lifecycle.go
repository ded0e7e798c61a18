// Package lifecycle runs a tier's service under the process signals:
// SIGHUP reloads the configuration, SIGTERM and SIGINT drain and exit, and
// SIGUSR1 reopens log files.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tidegate/tidegate/shared/admin"
	"github.com/tidegate/tidegate/shared/config"
)

// Service is one tier's serving side.
type Service interface {
	// Start binds every listener and begins serving. An error means nothing
	// is left bound.
	Start() error
	// Reload applies a validated configuration. It either applies all of it
	// or returns an error and keeps serving the previous one.
	Reload(f *config.File) error
	// Drain stops accepting new connections and waits for in-flight work
	// until it finishes or ctx ends, then closes what remains.
	Drain(ctx context.Context) error
}

// Reopener is implemented by services that write log files, which must be
// reopened after rotation.
type Reopener interface {
	Reopen() error
}

// Options configures [Run].
type Options struct {
	ConfigPath string
	Service    Service
	Admin      *admin.Server
	Logger     *slog.Logger
	// LevelVar, when set, is updated from log.level on reload.
	LevelVar *slog.LevelVar
	// Load reads and validates a configuration file; it defaults to
	// config.Load. The service tier checks its own section in Reload.
	Load func(path string) (*config.File, error)
	// DrainTimeout bounds Drain. ShutdownDelay is how long /readyz reports
	// 503 before listeners close, so that health checkers stop sending new
	// connections first.
	DrainTimeout  time.Duration
	ShutdownDelay time.Duration
	// Signals, when set, is the channel from [Notify] that the caller
	// subscribed before building the service. Run then handles the signals
	// that arrived during the build once Start returns. When nil, Run
	// subscribes itself.
	Signals chan os.Signal
}

// Notify subscribes to the signals that [Run] handles and returns the
// channel to pass as Options.Signals. Call it first thing in main, so that
// a SIGHUP sent while the configuration loads or the service is built is
// kept for Run instead of killing the process, which is the default
// action of SIGHUP. The channel buffers four signals and drops the rest.
func Notify() chan os.Signal {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	return sigs
}

// Run starts the service and blocks until it has drained after SIGTERM or
// SIGINT, or until ctx ends (treated like SIGTERM).
func Run(ctx context.Context, o Options) error {
	if o.Load == nil {
		o.Load = config.Load
	}
	sigs := o.Signals
	if sigs == nil {
		sigs = Notify()
	}
	defer signal.Stop(sigs)

	if err := o.Service.Start(); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	o.Admin.SetReady(true)
	o.Logger.Info("serving", "config", o.ConfigPath, "pid", os.Getpid())

	for {
		select {
		case <-ctx.Done():
			return shutdown(o, "context canceled", sigs)
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				reload(o)
			case syscall.SIGUSR1:
				if r, ok := o.Service.(Reopener); ok {
					if err := r.Reopen(); err != nil {
						o.Logger.Error("reopen log files failed", "err", err)
					} else {
						o.Logger.Info("log files reopened")
					}
				}
			default:
				return shutdown(o, sig.String(), sigs)
			}
		}
	}
}

func reload(o Options) {
	start := time.Now()
	f, err := o.Load(o.ConfigPath)
	if err != nil {
		o.Logger.Error("reload rejected, keeping the running config", "config", o.ConfigPath, "err", err)
		return
	}
	if err := o.Service.Reload(f); err != nil {
		o.Logger.Error("reload rejected, keeping the running config", "config", o.ConfigPath, "err", err)
		return
	}
	if o.LevelVar != nil {
		var l slog.Level
		if err := l.UnmarshalText([]byte(f.Log.Level)); err == nil {
			o.LevelVar.Set(l)
		}
	}
	o.Logger.Info("config reloaded", "config", o.ConfigPath, "duration", time.Since(start))
}

// shutdown drains the service. A second SIGTERM or SIGINT cuts the shutdown
// delay and the drain short and closes what remains, and other signals
// are logged and ignored.
func shutdown(o Options, reason string, sigs <-chan os.Signal) error {
	o.Logger.Info("draining", "reason", reason, "drain_timeout", o.DrainTimeout, "shutdown_delay", o.ShutdownDelay)
	o.Admin.SetReady(false)

	stopNow, forced := context.WithCancel(context.Background())
	defer forced()
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		for {
			select {
			case <-finished:
				return
			case sig := <-sigs:
				if sig == syscall.SIGTERM || sig == syscall.SIGINT {
					o.Logger.Warn("second signal during drain, closing remaining connections now", "signal", sig.String())
					forced()
					return
				}
				o.Logger.Warn("signal ignored during drain", "signal", sig.String())
			}
		}
	}()

	if o.ShutdownDelay > 0 {
		delay := time.NewTimer(o.ShutdownDelay)
		select {
		case <-delay.C:
		case <-stopNow.Done():
			delay.Stop()
		}
	}

	ctx, cancel := context.WithTimeout(stopNow, o.DrainTimeout)
	defer cancel()
	err := o.Service.Drain(ctx)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		o.Logger.Warn("drain timeout reached, closed remaining connections", "drain_timeout", o.DrainTimeout)
		err = nil
	case errors.Is(err, context.Canceled) && stopNow.Err() != nil:
		err = nil
	}

	actx, acancel := context.WithTimeout(context.Background(), time.Second)
	defer acancel()
	_ = o.Admin.Shutdown(actx)
	o.Logger.Info("stopped")
	return err
}
