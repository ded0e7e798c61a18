package lifecycle

import (
	"context"
	"log/slog"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tidegate/tidegate/shared/admin"
	"github.com/tidegate/tidegate/shared/config"
)

type recordingService struct {
	started, reloads, drains atomic.Int32
}

func (s *recordingService) Start() error {
	s.started.Add(1)
	return nil
}

func (s *recordingService) Reload(*config.File) error {
	s.reloads.Add(1)
	return nil
}

func (s *recordingService) Drain(context.Context) error {
	s.drains.Add(1)
	return nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A SIGHUP that arrives while the service is still being built must not
// kill the process, which is the default action of SIGHUP before
// signal.Notify. It is applied as a reload once the service has started.
func TestRunSighupBeforeStart(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	sigs := Notify()
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the SIGHUP to be queued", func() bool { return len(sigs) > 0 })

	svc := &recordingService{}
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), Options{
			ConfigPath: "test.yaml",
			Service:    svc,
			Admin:      admin.New("", false, logger),
			Logger:     logger,
			Load:       func(string) (*config.File, error) { return &config.File{}, nil },
			Signals:    sigs,
		})
	}()
	waitFor(t, "the reload", func() bool { return svc.reloads.Load() == 1 })
	if got := svc.started.Load(); got != 1 {
		t.Errorf("Start ran %d times, want 1", got)
	}

	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after SIGTERM")
	}
	if got := svc.drains.Load(); got != 1 {
		t.Errorf("Drain ran %d times, want 1", got)
	}
}

// blockingService drains until the context ends, like a service with a
// connection that never finishes.
type blockingService struct {
	recordingService
}

func (s *blockingService) Drain(ctx context.Context) error {
	s.drains.Add(1)
	<-ctx.Done()
	return ctx.Err()
}

// A second SIGTERM while a long shutdown delay and drain are under way
// stops the process at once, so an operator can always end it.
func TestRunSecondSigtermStops(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	svc := &blockingService{}
	adm := admin.New("", false, logger)
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), Options{
			ConfigPath:    "test.yaml",
			Service:       svc,
			Admin:         adm,
			Logger:        logger,
			Load:          func(string) (*config.File, error) { return &config.File{}, nil },
			Signals:       Notify(),
			ShutdownDelay: time.Hour,
			DrainTimeout:  time.Hour,
		})
	}()
	waitFor(t, "the service to start", func() bool { return svc.started.Load() == 1 && adm.Ready() })

	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the drain to begin", func() bool { return !adm.Ready() })
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v, want nil after a second SIGTERM", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after a second SIGTERM")
	}
	if got := svc.reloads.Load(); got != 0 {
		t.Errorf("a SIGHUP during the drain ran %d reloads, want 0", got)
	}
}
