//go:build linux

package userspace

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

const (
	// maxSpliceSize is the maximum one splice call moves, and the pipe
	// size the engine requests with F_SETPIPE_SZ: 1 MiB, the default of
	// /proc/sys/fs/pipe-max-size.
	maxSpliceSize = 1 << 20

	// maxIdlePipes is how many empty pipes an engine keeps for reuse.
	// A direction holds a pipe only while bytes are in flight, so this
	// bounds the descriptors the pool keeps, not the flows that splice.
	maxIdlePipes = 32

	// spliceUnsentLowat is the TCP_NOTSENT_LOWAT a direction sets on its
	// destination when it starts to splice: the socket then accepts bytes
	// only while fewer than this many wait unsent in it, and the rest waits
	// in the pipe. Without it a 1 MiB splice queues most of its pages in
	// the socket. In the bench's 1 MiB case the load generator and backend
	// then used 22 % more CPU per MiB (docs/benchmarks.md, "L4 bulk
	// transfers").
	spliceUnsentLowat = 16 << 10
)

// errNoProgress reports a splice into a socket that moved nothing and
// reported no error, which splice(2) does not document.
var errNoProgress = errors.New("userspace: splice to socket moved no bytes")

// halfCopy copies one direction of a connection, from src to dst. It waits
// for src to become readable through the runtime's poller without holding
// a buffer or a pipe, so an idle direction holds nothing but its goroutine.
// The first bytes move with read and write. Once a read fills the buffer,
// the rest moves with splice through a pipe taken from pipes while bytes
// are in flight and given back, empty, before the next wait.
type halfCopy struct {
	dst, src       *net.TCPConn
	dstRaw, srcRaw syscall.RawConn
	pipes          *pipePool
	moved          *atomic.Uint64
	count          prometheus.Counter

	// State that the callbacks below pass back to their caller.
	buf  *[]byte // filled by readBuffered
	pipe *pipe   // held from the first splice into it until it is empty at a wait
	n    int     // bytes read or spliced in by the last callback, 0 at EOF
	err  error
	// noPipe is set when spliceIn could not get a pipe, so the next
	// chunk is copied through a buffer instead.
	noPipe bool

	// Method values, made once per direction so that each wait does not
	// allocate a closure.
	readFn, spliceInFn, spliceOutFn func(fd uintptr) bool
}

// copyHalf copies src to dst until src sends FIN and then half-closes dst,
// unless skipCloseWrite reports true: the caller then closes dst at once.
// It returns the bytes copied and the first error, which includes the
// error of a closed socket after [abort].
func copyHalf(dst, src *net.TCPConn, pipes *pipePool, moved *atomic.Uint64, count prometheus.Counter, skipCloseWrite func() bool) (int64, error) {
	h := &halfCopy{dst: dst, src: src, pipes: pipes, moved: moved, count: count}
	var err error
	if h.srcRaw, err = src.SyscallConn(); err != nil {
		return 0, err
	}
	if h.dstRaw, err = dst.SyscallConn(); err != nil {
		return 0, err
	}
	h.readFn, h.spliceInFn, h.spliceOutFn = h.readBuffered, h.spliceIn, h.spliceOut

	total, err := h.run()
	if err != nil {
		return total, err
	}
	if skipCloseWrite() {
		return total, nil
	}
	return total, dst.CloseWrite()
}

// run copies until EOF or an error.
func (h *halfCopy) run() (int64, error) {
	defer h.releasePipe()
	var total int64
	splicing := false
	for {
		var n int
		var err error
		if splicing && !h.noPipe {
			n, err = h.spliceChunk()
		} else {
			var full bool
			h.noPipe = false
			n, full, err = h.copyBuffered()
			if full && !splicing {
				splicing = true
				h.limitUnsent()
			}
		}
		if n > 0 {
			total += int64(n)
			h.count.Add(float64(n))
			h.moved.Add(uint64(n))
		}
		if err != nil {
			return total, err
		}
		if n == 0 && !h.noPipe {
			return total, nil // EOF from src
		}
	}
}

// copyBuffered waits until src is readable, reads what it has into a
// buffer and writes that to dst. It reports whether the read filled the
// buffer, and returns 0 bytes with a nil error at EOF.
func (h *halfCopy) copyBuffered() (n int, full bool, err error) {
	if err := h.srcRaw.Read(h.readFn); err != nil {
		return 0, false, err
	}
	if h.buf == nil {
		return 0, false, h.err
	}
	b := (*h.buf)[:h.n]
	n, err = h.dst.Write(b)
	copyBuffers.Put(h.buf)
	h.buf = nil
	return n, h.n == copyBufferSize, err
}

// limitUnsent sets spliceUnsentLowat on dst. A failure leaves the socket
// as it was, which only costs speed, so the copy goes on.
func (h *halfCopy) limitUnsent() {
	_ = h.dstRaw.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, spliceUnsentLowat)
	})
}

// readBuffered is the [syscall.RawConn.Read] callback of copyBuffered. It
// keeps the buffer only when the read returns bytes, so a direction that
// waits for data holds none.
func (h *halfCopy) readBuffered(fd uintptr) bool {
	b := copyBuffers.Get().(*[]byte)
	for {
		n, err := unix.Read(int(fd), *b)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			copyBuffers.Put(b)
			return false
		case err != nil:
			copyBuffers.Put(b)
			h.n, h.err = 0, os.NewSyscallError("read", err)
		case n == 0:
			copyBuffers.Put(b)
			h.n, h.err = 0, nil
		default:
			h.buf, h.n, h.err = b, n, nil
		}
		return true
	}
}

// spliceChunk waits until src is readable and moves what it has, up to
// maxSpliceSize, into a pipe and from there to dst. It returns 0 bytes
// with a nil error at EOF, and also when no pipe could be opened, with
// h.noPipe set.
func (h *halfCopy) spliceChunk() (int, error) {
	if err := h.srcRaw.Read(h.spliceInFn); err != nil {
		return 0, err
	}
	if h.err != nil || h.n == 0 {
		return 0, h.err
	}
	in := h.n
	err := h.dstRaw.Write(h.spliceOutFn)
	if err == nil {
		err = h.err
	}
	return in - h.pipe.n, err
}

// spliceIn is the [syscall.RawConn.Read] callback of spliceChunk. The pipe
// it fills is empty on entry, so EAGAIN means src has no bytes, and the
// pipe goes back to the pool before the wait.
func (h *halfCopy) spliceIn(fd uintptr) bool {
	if h.pipe == nil {
		p, err := h.pipes.get()
		if err != nil {
			// Most likely EMFILE. Copying through a buffer needs no
			// descriptor, so the connection goes on.
			h.noPipe, h.n, h.err = true, 0, nil
			return true
		}
		h.pipe = p
	}
	for {
		n, err := unix.Splice(int(fd), nil, h.pipe.w, nil, maxSpliceSize, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			h.releasePipe()
			return false
		case err != nil:
			h.n, h.err = 0, os.NewSyscallError("splice", err)
		default:
			h.n, h.err = int(n), nil
			h.pipe.n += int(n)
		}
		return true
	}
}

// spliceOut is the [syscall.RawConn.Write] callback of spliceChunk: it
// empties the pipe into dst.
func (h *halfCopy) spliceOut(fd uintptr) bool {
	for h.pipe.n > 0 {
		n, err := unix.Splice(h.pipe.r, nil, int(fd), nil, h.pipe.n, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch {
		case n > 0:
			h.pipe.n -= int(n)
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			return false
		case err != nil:
			h.err = os.NewSyscallError("splice", err)
			return true
		default:
			h.err = errNoProgress
			return true
		}
	}
	h.err = nil
	return true
}

// releasePipe gives the held pipe back to the pool, which closes it if
// bytes are still inside.
func (h *halfCopy) releasePipe() {
	if h.pipe != nil {
		h.pipes.put(h.pipe)
		h.pipe = nil
	}
}

// pipe is a non-blocking kernel pipe that spliced bytes pass through.
type pipe struct {
	r, w int // read and write ends
	n    int // bytes spliced in and not yet out
}

func newPipe() (*pipe, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	// A smaller pipe works too, with more splice calls per chunk, so
	// an error here is ignored.
	_, _ = unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, maxSpliceSize)
	return &pipe{r: fds[0], w: fds[1]}, nil
}

func (p *pipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

// pipePool keeps up to maxIdlePipes empty pipes. Its methods are safe for
// concurrent use.
type pipePool struct {
	free chan *pipe
	open func() (*pipe, error) // newPipe, replaced by tests
}

func newPipePool() *pipePool {
	return &pipePool{free: make(chan *pipe, maxIdlePipes), open: newPipe}
}

// get returns an empty pipe, from the pool or newly opened.
func (pp *pipePool) get() (*pipe, error) {
	select {
	case p := <-pp.free:
		return p, nil
	default:
		return pp.open()
	}
}

// put returns p to the pool, or closes it when it still holds bytes or
// the pool is full.
func (pp *pipePool) put(p *pipe) {
	if p.n != 0 {
		p.close()
		return
	}
	select {
	case pp.free <- p:
	default:
		p.close()
	}
}

// close closes the pipes in the pool. Pipes put back later are kept, so
// callers close the pool only once no connection can use it.
func (pp *pipePool) close() {
	for {
		select {
		case p := <-pp.free:
			p.close()
		default:
			return
		}
	}
}

// readAvailable reads what c has received so far into p without waiting.
// It returns 0 and a nil error when nothing has arrived and at EOF, which
// the next read returns again.
func readAvailable(c *net.TCPConn, p []byte) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	err = raw.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Read(int(fd), p)
			if rerr != unix.EINTR {
				return true
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case rerr == unix.EAGAIN:
		return 0, nil
	case rerr != nil:
		return 0, os.NewSyscallError("read", rerr)
	}
	return n, nil
}
