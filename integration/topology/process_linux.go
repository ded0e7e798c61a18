//go:build linux

package topology

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a program started inside a host's namespace. Its standard
// output and error go to one log, kept in memory and written to a file in
// [Topology.Dir].
type Process struct {
	Name string
	Host *Host
	PID  int

	cmd  *exec.Cmd
	log  *logBuffer
	file *os.File
	done chan struct{}
	err  error
}

// Start runs argv inside the host's namespace. The topology stops the
// process on teardown. The child keeps the mount namespace of the test, so
// the root /sys/fs/bpf stays mounted for it. "ip netns exec" would remount
// /sys and hide it.
func (h *Host) Start(name string, argv ...string) (*Process, error) {
	t := h.topo
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("start %s: topology %s is closed", name, t.Name)
	}

	logPath := filepath.Join(t.Dir, fmt.Sprintf("%s.%s.log", h.Name, name))
	file, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, Host: h, log: &logBuffer{}, file: file, done: make(chan struct{})}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = t.Dir
	out := io.MultiWriter(p.log, file)
	cmd.Stdout, cmd.Stderr = out, out
	// The kernel sends SIGKILL to the child when the thread that forked it
	// ends, which also covers the test process dying without cleanup.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}

	// fork inherits the network namespace of the calling thread, which Do
	// has switched.
	if err := h.Do(cmd.Start); err != nil {
		file.Close()
		return nil, fmt.Errorf("start %s in %s: %w", name, h.Name, err)
	}
	p.cmd = cmd
	p.PID = cmd.Process.Pid
	go func() {
		p.err = cmd.Wait()
		p.file.Close()
		close(p.done)
	}()

	t.mu.Lock()
	t.procs = append(t.procs, p)
	t.mu.Unlock()
	return p, nil
}

// Signal sends sig to the process unless it has exited.
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return fmt.Errorf("signal %s: %s has exited (%s)", sig, p.Name, p.State())
	}
	return p.cmd.Process.Signal(sig)
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits up to timeout for the process to end and reports whether it
// did.
func (p *Process) Wait(timeout time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Err returns the result of the process's wait, nil while it runs or after a
// clean exit.
func (p *Process) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// State describes the process for logs: "running", "exited 0" or the wait
// error.
func (p *Process) State() string {
	if !p.Exited() {
		return "running"
	}
	if p.err == nil {
		return "exited 0"
	}
	return p.err.Error()
}

// Stop sends SIGTERM and, when the process is still running after grace,
// SIGKILL. It returns once the process has exited.
func (p *Process) Stop(grace time.Duration) {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if !p.Wait(grace) {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Kill sends SIGKILL and waits for the process to exit.
func (p *Process) Kill() {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Output returns everything the process has written so far.
func (p *Process) Output() string { return p.log.String() }

// Tail returns at most the last n bytes of the output.
func (p *Process) Tail(n int) string {
	s := p.log.String()
	if len(s) > n {
		return "...\n" + s[len(s)-n:]
	}
	return s
}

// CountLines returns how many output lines contain substr.
func (p *Process) CountLines(substr string) int {
	n := 0
	sc := bufio.NewScanner(strings.NewReader(p.log.String()))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), substr) {
			n++
		}
	}
	return n
}

// RSS returns the resident set size of the process in bytes, read from
// /proc/PID/status.
func (p *Process) RSS() (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID))
	if err != nil {
		return 0, fmt.Errorf("read rss of %s: %w", p.Name, err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse VmRSS %q: %w", rest, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("read rss of %s: no VmRSS line", p.Name)
}

// WaitHTTP polls url from inside the process's namespace until it returns
// status want, the process exits, or ctx ends. The error carries the last
// response or error and, when the process exited, its state and output tail.
func (p *Process) WaitHTTP(ctx context.Context, url string, want int) error {
	client := &http.Client{Transport: p.Host.Transport(nil), Timeout: time.Second}
	defer client.CloseIdleConnections()
	last := "no attempt"
	for {
		if p.Exited() {
			return fmt.Errorf("%s exited (%s) before %s returned %d:\n%s", p.Name, p.State(), url, want, p.Tail(4<<10))
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s of %s to return %d: %w (last: %s)", url, p.Name, want, ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WaitReady waits until the admin /readyz on adminPort (inside the process's
// namespace, on 127.0.0.1) returns 200, for at most timeout.
func (p *Process) WaitReady(adminPort int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return p.WaitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/readyz", adminPort), http.StatusOK)
}

// WaitTCP waits until a TCP connection to addr from inside the process's
// namespace succeeds, for at most timeout.
func (p *Process) WaitTCP(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if p.Exited() {
			return fmt.Errorf("%s exited (%s) before %s accepted:\n%s", p.Name, p.State(), addr, p.Tail(4<<10))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := p.Host.DialContext(ctx, "tcp", addr)
		cancel()
		if err == nil {
			conn.Close()
			return nil
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("wait for %s of %s: %w", addr, p.Name, last)
}

// logBuffer is an io.Writer safe for concurrent writes from the process's
// stdout and stderr copiers and reads from the test.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// maxLogBytes bounds the in-memory log of one process. The log file in
// [Topology.Dir] keeps everything.
const maxLogBytes = 8 << 20

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len()+len(p) > maxLogBytes {
		// Keep the newest half, which is what a failure dump shows.
		keep := b.buf.Bytes()[b.buf.Len()/2:]
		rest := append([]byte(nil), keep...)
		b.buf.Reset()
		b.buf.Write(rest)
	}
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
