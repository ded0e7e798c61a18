//go:build linux

package userspace

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// endlessWriter is a real that writes until the connection fails and then
// reports the error. Its write deadline is long, so a connection the engine
// never closes shows up as os.ErrDeadlineExceeded.
func endlessWriter(errs chan<- error) func(rc *realConn) {
	return func(rc *realConn) {
		chunk := testPayload(256 << 10)
		_ = rc.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		for {
			if _, err := rc.conn.Write(chunk); err != nil {
				errs <- err
				return
			}
		}
	}
}

// TestDrainTimeoutEndsStalledDownload starts a download that splices,
// lets the client stop reading after 1 MiB, so that bytes wait in the
// engine's pipe behind TCP_NOTSENT_LOWAT, and drains with a short timeout.
// Drain must close the flow, its pipe and its setup worker.
func TestDrainTimeoutEndsStalledDownload(t *testing.T) {
	e, _ := newTestEngine(t)
	realErr := make(chan error, 1)
	real, _ := startReal(t, endlessWriter(realErr))
	vip := serve(t, e, VIP{Picker: staticPicker{real}})
	before := settleFDs(t)
	workersBefore, _ := setupWorkers()

	c := dial(t, vip)
	_ = c.SetReadBuffer(16 << 10)
	if _, err := io.ReadFull(c, make([]byte, 1<<20)); err != nil {
		t.Fatalf("read start of download: %v", err)
	}
	// The client reads no more. Wait until the engine holds bytes in a
	// pipe, which is the state Drain must clean up.
	waitFor(t, "a pipe in use", func() bool { return countFDs(t).pipes > before.pipes })

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := e.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Drain with a stalled download = %v, want DeadlineExceeded", err)
	}
	select {
	case err := <-realErr:
		if errors.Is(err, context.DeadlineExceeded) || isTimeoutErr(err) {
			t.Errorf("real's write timed out: Drain left the connection open")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("real still writing after Drain returned")
	}
	if n := testutil.ToFloat64(e.m.active.WithLabelValues("test")); n != 0 {
		t.Errorf("active connections after Drain = %v, want 0", n)
	}
	waitFor(t, "pipes closed", func() bool { return countFDs(t).pipes <= before.pipes })
	waitFor(t, "setup workers gone", func() bool {
		all, _ := setupWorkers()
		return all <= workersBefore
	})
}

// TestStalledRealUploadIdleTimeout has a real that accepts and never
// reads while the client uploads. Once the socket buffers fill, nothing
// moves, so the idle timeout must end the flow and free its pipe.
func TestStalledRealUploadIdleTimeout(t *testing.T) {
	e, _ := newTestEngine(t)
	hold := make(chan struct{})
	real, _ := startReal(t, func(rc *realConn) { <-hold })
	// Registered after startReal's cleanup, so it runs first and lets the
	// real's handler return.
	t.Cleanup(func() { close(hold) })
	vip := serve(t, e, VIP{IdleTimeout: 300 * time.Millisecond, Picker: staticPicker{real}})
	before := settleFDs(t)

	c := dial(t, vip)
	chunk := testPayload(1 << 20)
	var err error
	for range 256 {
		if _, err = c.Write(chunk); err != nil {
			break
		}
	}
	if err == nil {
		t.Fatal("256 MiB upload to a real that never reads succeeded")
	}
	if isTimeoutErr(err) {
		t.Fatalf("upload hit the test's own deadline: the idle timeout did not end the flow")
	}
	waitFor(t, "flow closed", func() bool {
		return testutil.ToFloat64(e.m.active.WithLabelValues("test")) == 0
	})
	waitFor(t, "pipes closed", func() bool { return countFDs(t).pipes-before.pipes <= 2*maxIdlePipes })
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestConnectStormDuringUpdateAndDrain opens a few hundred connections at
// once while Update reloads the VIP and then Drain begins. Each client
// must get its own bytes back in full or no bytes at all, and afterwards
// the counters must add up, no flow may stay active and no setup worker
// may be left.
func TestConnectStormDuringUpdateAndDrain(t *testing.T) {
	const clients = 300
	e, _ := newTestEngine(t)
	real := startManyReal(t, plainEcho)
	v := VIP{Address: "127.0.0.1:0", ConnectTimeout: manyConnectTimeout, Picker: staticPicker{real}}
	vip := serve(t, e, v)
	workersBefore, _ := setupWorkers()
	// The same configured address keeps the listener across reloads.
	v.Name, v.ProxyVersion, v.DialAttempts = "test", 2, 3

	var echoed, refused atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range clients {
		wg.Go(func() {
			<-start
			c, err := net.DialTimeout("tcp", vip, 10*time.Second)
			if err != nil {
				refused.Add(1)
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			// Every fourth client moves enough to splice.
			size := 100
			if i%4 == 0 {
				size = 256 << 10
			}
			msg := bytes.Repeat([]byte{byte(i)}, size)
			go func() {
				_, _ = c.Write(msg)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
			got, _ := io.ReadAll(c)
			switch {
			case bytes.Equal(got, msg):
				echoed.Add(1)
			case len(got) == 0:
				refused.Add(1)
			default:
				t.Errorf("client %d: got %d bytes back of %d, or wrong bytes", i, len(got), size)
			}
		})
	}
	close(start)
	for range 5 {
		if err := e.Update([]VIP{v}); err != nil {
			t.Errorf("Update during connects: %v", err)
		}
	}
	waitFor(t, "some connections accepted", func() bool {
		return testutil.ToFloat64(e.m.accepted.WithLabelValues("test")) >= clients/3
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.Drain(ctx); err != nil {
		t.Errorf("Drain: %v", err)
	}
	wg.Wait()

	t.Logf("%d echoed, %d refused", echoed.Load(), refused.Load())
	if echoed.Load() == 0 {
		t.Error("no client got its echo")
	}
	accepted := testutil.ToFloat64(e.m.accepted.WithLabelValues("test"))
	connected := testutil.ToFloat64(e.m.realConns.WithLabelValues("test", real))
	var rejected float64
	for _, reason := range []string{rejectLimit, rejectDraining, rejectNoReal, rejectDialFailed} {
		rejected += testutil.ToFloat64(e.m.rejected.WithLabelValues("test", reason))
	}
	if accepted != connected+rejected {
		t.Errorf("accepted %v, want real connections %v + rejected %v", accepted, connected, rejected)
	}
	if int(connected) < int(echoed.Load()) {
		t.Errorf("real connections %v < clients echoed %d", connected, echoed.Load())
	}
	if n := testutil.ToFloat64(e.m.active.WithLabelValues("test")); n != 0 {
		t.Errorf("active after Drain = %v, want 0", n)
	}
	if n := testutil.ToFloat64(e.m.realActive.WithLabelValues("test", real)); n != 0 {
		t.Errorf("real active after Drain = %v, want 0", n)
	}
	waitFor(t, "setup workers gone", func() bool {
		all, _ := setupWorkers()
		return all <= workersBefore
	})
}
