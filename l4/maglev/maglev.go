// Package maglev builds Maglev consistent-hashing lookup tables (Eisenbud et
// al., "Maglev: A Fast and Reliable Software Network Load Balancer", NSDI
// 2016). Both L4 engines use the same table: the userspace engine looks flows
// up in Go, the XDP engine copies [Table.Entries] into a BPF array.
//
// Tables depend only on the backend IDs, weights and table size, so every L4
// node given the same configuration builds the same table and a fleet behind
// ECMP agrees on where a flow goes without sharing state.
package maglev

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math/big"
)

// DefaultSize is the default table size, a prime well above 100 times the
// expected number of backends, as the paper recommends.
const DefaultSize = 65537

// Backend is one destination. ID must be stable across processes and
// restarts (an address string works well); Weight 0 keeps the backend out of
// the table.
type Backend struct {
	ID     string
	Weight int
}

// ErrNoBackend is returned by [New] when no backend has a positive weight.
var ErrNoBackend = errors.New("maglev: no backend with a positive weight")

// Table is an immutable lookup table. It is safe for concurrent use.
type Table struct {
	entries []uint32 // backend index per slot
	count   int      // number of backends the indexes refer to
}

// New builds a table of the given prime size over backends. Slot owners are
// indexes into backends.
func New(backends []Backend, size uint64) (*Table, error) {
	if size < 2 || !big.NewInt(int64(size)).ProbablyPrime(20) {
		return nil, fmt.Errorf("maglev: table size %d is not prime", size)
	}
	if len(backends) > int(size) {
		return nil, fmt.Errorf("maglev: %d backends do not fit a table of %d slots", len(backends), size)
	}

	type cursor struct {
		offset, skip, next uint64
		weight             int
	}
	cursors := make([]cursor, 0, len(backends))
	active := make([]int, 0, len(backends))
	for i, b := range backends {
		if b.Weight < 0 {
			return nil, fmt.Errorf("maglev: backend %q has negative weight %d", b.ID, b.Weight)
		}
		if b.Weight == 0 {
			continue
		}
		cursors = append(cursors, cursor{
			offset: hashID(b.ID, 0x6d61676c) % size,
			skip:   hashID(b.ID, 0x65763031)%(size-1) + 1,
			weight: b.Weight,
		})
		active = append(active, i)
	}
	if len(active) == 0 {
		return nil, ErrNoBackend
	}

	const empty = ^uint32(0)
	entries := make([]uint32, size)
	for i := range entries {
		entries[i] = empty
	}

	// Each round, a backend claims as many slots as its weight, each the
	// next free slot in its own permutation (offset + j*skip) mod size.
	filled := uint64(0)
	for filled < size {
		for c := range cursors {
			cur := &cursors[c]
			for range cur.weight {
				slot := (cur.offset + cur.next*cur.skip) % size
				for entries[slot] != empty {
					cur.next++
					slot = (cur.offset + cur.next*cur.skip) % size
				}
				entries[slot] = uint32(active[c])
				cur.next++
				filled++
				if filled == size {
					break
				}
			}
			if filled == size {
				break
			}
		}
	}
	return &Table{entries: entries, count: len(backends)}, nil
}

// Size returns the number of slots.
func (t *Table) Size() int { return len(t.entries) }

// Lookup returns the index of the backend that owns hash.
func (t *Table) Lookup(hash uint64) int {
	return int(t.entries[hash%uint64(len(t.entries))])
}

// Preference returns up to n distinct backend indexes for hash, starting
// with [Table.Lookup] and continuing with the owners of the following
// slots. Callers use it to try another backend when a dial fails; the order
// is the same on every node.
func (t *Table) Preference(hash uint64, n int) []int {
	if n > t.count {
		n = t.count
	}
	out := make([]int, 0, n)
	start := hash % uint64(len(t.entries))
	for i := uint64(0); i < uint64(len(t.entries)) && len(out) < n; i++ {
		b := int(t.entries[(start+i)%uint64(len(t.entries))])
		if !containsInt(out, b) {
			out = append(out, b)
		}
	}
	return out
}

// Entries returns a copy of the slot owners, for loading into a BPF map.
func (t *Table) Entries() []uint32 {
	return append([]uint32(nil), t.entries...)
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// hashID hashes a backend ID with a seed. FNV-1a is stable across processes
// and Go versions; the final mix spreads its low bits, which the modulo uses.
func hashID(id string, seed uint64) uint64 {
	h := fnv.New64a()
	var s [8]byte
	for i := range s {
		s[i] = byte(seed >> (8 * i))
	}
	h.Write(s[:])
	h.Write([]byte(id))
	return Mix64(h.Sum64())
}

// Mix64 is the SplitMix64 finaliser: a cheap bijection whose output bits each
// depend on every input bit. Flow hashes pass through it because Linux
// picks even ephemeral ports, which would otherwise skew the low bits.
func Mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
