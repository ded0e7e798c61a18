package upstream

import (
	"hash/fnv"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/tidegate/tidegate/l4/maglev"
	"github.com/tidegate/tidegate/l7/conninfo"
)

// balancer picks a backend for a request. skip reports backends that must
// not be picked (unavailable, or already tried by this request). A nil
// result means no backend is left.
type balancer interface {
	pick(r *http.Request, backends []*Backend, skip func(*Backend) bool) *Backend
}

// roundRobin walks a precomputed smooth weighted round-robin sequence (the
// nginx algorithm), so a backend of weight 3 next to one of weight 1 gets
// "a a b a" rather than "a a a b". The sequence is built once, so picking
// needs only an atomic counter.
type roundRobin struct {
	seq  []int
	next atomic.Uint64
}

func newRoundRobin(backends []*Backend) *roundRobin {
	g := 0
	for _, b := range backends {
		g = gcd(g, b.Weight)
	}
	if g == 0 {
		return &roundRobin{}
	}
	total := 0
	weights := make([]int, len(backends))
	for i, b := range backends {
		weights[i] = b.Weight / g
		total += weights[i]
	}
	current := make([]int, len(backends))
	seq := make([]int, 0, total)
	for range total {
		best := -1
		for i, w := range weights {
			current[i] += w
			if w > 0 && (best < 0 || current[i] > current[best]) {
				best = i
			}
		}
		current[best] -= total
		seq = append(seq, best)
	}
	return &roundRobin{seq: seq}
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func (rr *roundRobin) pick(_ *http.Request, backends []*Backend, skip func(*Backend) bool) *Backend {
	n := uint64(len(rr.seq))
	if n == 0 {
		return nil
	}
	start := rr.next.Add(1) - 1
	for i := range n {
		b := backends[rr.seq[(start+i)%n]]
		if !skip(b) {
			return b
		}
	}
	return nil
}

// leastRequest is the power of two choices: pick two distinct candidates at
// random and keep the one with fewer requests in flight per unit of weight.
type leastRequest struct{}

func (leastRequest) pick(_ *http.Request, backends []*Backend, skip func(*Backend) bool) *Backend {
	var a, b *Backend
	// Random probes find candidates quickly when most backends are usable;
	// the scan below covers pools where most are not.
	for range 2 * len(backends) {
		c := backends[rand.IntN(len(backends))]
		if skip(c) || c == a {
			continue
		}
		if a == nil {
			a = c
			continue
		}
		b = c
		break
	}
	if b == nil {
		// Random probes missed; scan from a random start so that a pool
		// with few usable backends still compares two of them.
		start := rand.IntN(len(backends))
		for i := range backends {
			c := backends[(start+i)%len(backends)]
			if skip(c) || c == a {
				continue
			}
			if a == nil {
				a = c
				continue
			}
			b = c
			break
		}
	}
	if a == nil || b == nil {
		return a
	}
	// Compare inFlight/weight without division.
	if b.inFlight.Load()*int64(a.Weight) < a.inFlight.Load()*int64(b.Weight) {
		return b
	}
	return a
}

// consistentHash maps a request key onto a Maglev table built over every
// backend, so a key keeps its backend while the set is unchanged. When a
// backend is unavailable, only its keys move, each to the next backend in
// that key's Maglev preference order.
type consistentHash struct {
	table    *maglev.Table
	key      func(r *http.Request) (uint64, bool)
	fallback *roundRobin
}

// hashTableSize is a prime above 100 times the backends a pool is expected
// to hold, which keeps the Maglev spread within about 1%.
const hashTableSize = 5003

func newConsistentHash(backends []*Backend, hashKey string) (*consistentHash, error) {
	mb := make([]maglev.Backend, len(backends))
	for i, b := range backends {
		mb[i] = maglev.Backend{ID: b.Addr, Weight: b.Weight}
	}
	table, err := maglev.New(mb, hashTableSize)
	if err != nil {
		return nil, err
	}
	return &consistentHash{table: table, key: hashKeyFunc(hashKey), fallback: newRoundRobin(backends)}, nil
}

func (ch *consistentHash) pick(r *http.Request, backends []*Backend, skip func(*Backend) bool) *Backend {
	h, ok := ch.key(r)
	if !ok {
		// A request without the key has nothing to stick to.
		return ch.fallback.pick(r, backends, skip)
	}
	if b := backends[ch.table.Lookup(h)]; !skip(b) {
		return b
	}
	for _, i := range ch.table.Preference(h, len(backends)) {
		if b := backends[i]; !skip(b) {
			return b
		}
	}
	return nil
}

// hashKeyFunc returns the key extractor for a validated hash_key value:
// "client", "header:NAME" or "cookie:NAME".
func hashKeyFunc(spec string) func(r *http.Request) (uint64, bool) {
	if name, ok := strings.CutPrefix(spec, "header:"); ok {
		name = http.CanonicalHeaderKey(name)
		return func(r *http.Request) (uint64, bool) {
			v := r.Header.Get(name)
			return hashString(v), v != ""
		}
	}
	if name, ok := strings.CutPrefix(spec, "cookie:"); ok {
		return func(r *http.Request) (uint64, bool) {
			c, err := r.Cookie(name)
			if err != nil || c.Value == "" {
				return 0, false
			}
			return hashString(c.Value), true
		}
	}
	return func(r *http.Request) (uint64, bool) {
		a := conninfo.ClientAddr(r)
		return maglev.HashClient(a), a.IsValid()
	}
}

func hashString(s string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return maglev.Mix64(h.Sum64())
}
