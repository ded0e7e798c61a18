// Package health runs active health checks with rise and fall thresholds.
// Both tiers use it: the L4 checks its reals, the L7 its upstream backends.
package health

import (
	"context"
	"sync"
	"time"
)

// Probe performs one check and returns nil when the target is healthy.
type Probe func(ctx context.Context) error

// Config holds the timing and thresholds of a check.
type Config struct {
	Interval time.Duration
	Timeout  time.Duration
	Rise     int // consecutive successes to mark a down target up
	Fall     int // consecutive failures to mark an up target down
}

// Change reports a state transition. Err is the last probe's error when the
// target went down.
type Change struct {
	Healthy bool
	Err     error
}

// Checker probes one target on an interval and reports transitions. A new
// checker starts in the state given to [New], so a process that starts with
// every target up does not hold traffic back until the first rise.
type Checker struct {
	cfg      Config
	probe    Probe
	onChange func(Change)

	mu        sync.Mutex
	healthy   bool
	successes int
	failures  int
	lastErr   error

	stop chan struct{}
	done chan struct{}
}

// New returns a checker that calls onChange (from its own goroutine) on each
// transition. Call [Checker.Start] to begin probing.
func New(cfg Config, initiallyHealthy bool, probe Probe, onChange func(Change)) *Checker {
	if cfg.Rise < 1 {
		cfg.Rise = 1
	}
	if cfg.Fall < 1 {
		cfg.Fall = 1
	}
	return &Checker{
		cfg:      cfg,
		probe:    probe,
		onChange: onChange,
		healthy:  initiallyHealthy,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
}

// Start begins probing in a goroutine. The first probe runs at once.
func (c *Checker) Start() {
	go c.loop()
}

// Stop ends probing and waits for an in-flight probe to return.
func (c *Checker) Stop() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
}

// Healthy reports the current state.
func (c *Checker) Healthy() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.healthy
}

// LastError returns the error of the most recent failed probe, or nil after
// a success.
func (c *Checker) LastError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

func (c *Checker) loop() {
	defer close(c.done)
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		c.runOnce()
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
	}
}

func (c *Checker) runOnce() {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	go func() {
		select {
		case <-c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := c.probe(ctx)
	cancel()
	select {
	case <-c.stop:
		return // a probe cut short by Stop says nothing about the target
	default:
	}
	if ch, changed := c.Observe(err); changed && c.onChange != nil {
		c.onChange(ch)
	}
}

// Observe records one probe result and reports whether the state changed.
// The L7 also feeds it passive results (connect failures) between probes.
func (c *Checker) Observe(err error) (Change, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastErr = err
	if err == nil {
		c.failures = 0
		c.successes++
		if !c.healthy && c.successes >= c.cfg.Rise {
			c.healthy = true
			return Change{Healthy: true}, true
		}
		return Change{}, false
	}
	c.successes = 0
	c.failures++
	if c.healthy && c.failures >= c.cfg.Fall {
		c.healthy = false
		return Change{Healthy: false, Err: err}, true
	}
	return Change{}, false
}
