package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"

	"github.com/tidegate/tidegate/l4"
	"github.com/tidegate/tidegate/shared/admin"
	"github.com/tidegate/tidegate/shared/config"
	"github.com/tidegate/tidegate/shared/lifecycle"
	"github.com/tidegate/tidegate/shared/logging"
)

// tier builds one tier's service from a loaded configuration.
type tier struct {
	name  string
	build func(f *config.File, logger *slog.Logger, adm *admin.Server) (lifecycle.Service, error)
	// flags, when set, registers tier-specific flags and returns the
	// function that applies them to the built service.
	flags func(fs *flag.FlagSet) func(lifecycle.Service)
}

func runL4(args []string, stdout, stderr io.Writer) int {
	return serve(tier{
		name: "l4",
		build: func(f *config.File, logger *slog.Logger, adm *admin.Server) (lifecycle.Service, error) {
			return l4.New(f, logger, adm)
		},
		flags: func(fs *flag.FlagSet) func(lifecycle.Service) {
			detach := fs.Bool("detach", false, "on shutdown, detach the XDP program and remove its pins (by default XDP connections keep flowing until the next start)")
			return func(svc lifecycle.Service) { svc.(*l4.Server).SetDetach(*detach) }
		},
	}, args, stderr)
}

func runL7(args []string, stdout, stderr io.Writer) int {
	return serve(tier{name: "l7", build: newL7}, args, stderr)
}

func serve(t tier, args []string, stderr io.Writer) int {
	// Subscribe before the slow part of startup (config, certificates, BPF
	// objects), so that an early SIGHUP becomes a reload after start.
	// NOTE: a SIGHUP that arrives before this line runs, in the first few
	// milliseconds of the process, still terminates it.
	sigs := lifecycle.Notify()
	defer signal.Stop(sigs)

	fs := flag.NewFlagSet(t.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "path of the YAML configuration `file` (required)")
	logFormat := fs.String("log-format", "", "log `format`: text or json (overrides log.format)")
	logLevel := fs.String("log-level", "", "log `level`: debug, info, warn or error (overrides log.level)")
	adminAddr := fs.String("admin", "", "admin listener `address` host:port (overrides admin.address)")
	var applyFlags func(lifecycle.Service)
	if t.flags != nil {
		applyFlags = t.flags(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: tidegate %s --config FILE [flags]\n\n", t.name)
		fmt.Fprintf(stderr, "Runs the %s tier. SIGHUP reloads FILE, SIGTERM or SIGINT drains and exits,\n", t.name)
		fmt.Fprintln(stderr, "a second SIGTERM or SIGINT stops at once, SIGUSR1 reopens log files.")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *configPath == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}

	f, err := config.Load(*configPath)
	if err != nil {
		fmt.Fprintf(stderr, "tidegate %s: %s: %v\n", t.name, *configPath, err)
		return 1
	}
	if (t.name == "l4" && f.L4 == nil) || (t.name == "l7" && f.L7 == nil) {
		fmt.Fprintf(stderr, "tidegate %s: %s has no %s section\n", t.name, *configPath, t.name)
		return 1
	}
	if *logFormat != "" {
		f.Log.Format = *logFormat
	}
	if *logLevel != "" {
		f.Log.Level = *logLevel
	}
	if *adminAddr != "" {
		f.Admin.Address = *adminAddr
	}

	logger, levelVar, err := logging.New(os.Stderr, f.Log.Level, f.Log.Format)
	if err != nil {
		fmt.Fprintf(stderr, "tidegate %s: %v\n", t.name, err)
		return 2
	}
	logger = logger.With("tier", t.name)

	adm := admin.New(f.Admin.Token, f.Admin.Pprof, logger.With("component", "admin"))
	svc, err := t.build(f, logger, adm)
	if err != nil {
		logger.Error("invalid configuration", "config", *configPath, "err", err)
		return 1
	}
	if applyFlags != nil {
		applyFlags(svc)
	}
	if err := adm.Listen(f.Admin.Address); err != nil {
		logger.Error("admin listen failed", "address", f.Admin.Address, "err", err)
		return 1
	}

	// Reloads keep the command-line overrides.
	load := func(path string) (*config.File, error) {
		nf, err := config.Load(path)
		if err != nil {
			return nil, err
		}
		if *logLevel != "" {
			nf.Log.Level = *logLevel
		}
		return nf, nil
	}
	err = lifecycle.Run(context.Background(), lifecycle.Options{
		ConfigPath:    *configPath,
		Service:       svc,
		Admin:         adm,
		Logger:        logger,
		LevelVar:      levelVar,
		Load:          load,
		DrainTimeout:  f.DrainTimeout.D(),
		ShutdownDelay: f.ShutdownDelay.D(),
		Signals:       sigs,
	})
	if err != nil {
		logger.Error("exit", "err", err)
		return 1
	}
	return 0
}
