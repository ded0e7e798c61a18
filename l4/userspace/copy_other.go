//go:build !linux

package userspace

import (
	"io"
	"net"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// chunkSize is how much one io.Copy call moves before the byte counters
// are updated, so long transfers show up in metrics while they run.
const chunkSize = 1 << 20

// pipePool is empty outside Linux, where copies do not splice.
type pipePool struct{}

func newPipePool() *pipePool { return &pipePool{} }

func (*pipePool) close() {}

// copyHalf copies src to dst until src sends FIN and then half-closes dst,
// unless skipCloseWrite reports true: the caller then closes dst at once.
//
// NOTE: io.Copy keeps its buffer while it waits for src, so an idle flow
// holds two 32 KiB buffers here, unlike on Linux.
func copyHalf(dst, src *net.TCPConn, _ *pipePool, moved *atomic.Uint64, count prometheus.Counter, skipCloseWrite func() bool) (int64, error) {
	var total int64
	for {
		n, err := io.Copy(dst, &io.LimitedReader{R: src, N: chunkSize})
		if n > 0 {
			total += n
			count.Add(float64(n))
			moved.Add(uint64(n))
		}
		if err != nil {
			return total, err
		}
		if n < chunkSize {
			if skipCloseWrite() {
				return total, nil
			}
			return total, dst.CloseWrite()
		}
	}
}

// readAvailable reads nothing outside Linux, so the PROXY header goes to
// the real in a write of its own.
func readAvailable(*net.TCPConn, []byte) (int, error) { return 0, nil }
