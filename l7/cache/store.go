package cache

import (
	"container/list"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tidegate/tidegate/l7/passthrough"
)

// entryOverhead approximates the bytes an entry costs beyond its key,
// header fields and body (structs, list element, map slot), so that many
// tiny entries still count against the budget.
const entryOverhead = 256

// maxVariants bounds the stored variants of one URI so that a client
// sending many distinct Vary values cannot crowd out other URIs.
const maxVariants = 32

// entry is one stored response. Its response fields never change after it
// is inserted, because a revalidation stores an updated copy in its place.
type entry struct {
	primary  string
	extra    string
	headOnly bool // stored from a HEAD response, so it has no body and serves only HEAD

	status   int
	header   http.Header
	body     []byte
	cc       directives
	timing   timing
	lifetime time.Duration

	varyNames  []string
	varyValues []string

	// fields and wire are header in the form the fast path writes, and
	// contentLength the Content-Length a hit sends, nil for none.
	fields        []passthrough.Field
	wire          []byte
	contentLength []string

	size int64
	elem *list.Element
}

// newEntry builds an entry from a response. header must already be
// filtered by storedHeader.
func newEntry(k requestKey, req *http.Request, status int, header http.Header, body []byte, t timing, sp storePolicy) *entry {
	e := &entry{
		primary:  k.primary,
		extra:    k.extra,
		headOnly: req.Method == http.MethodHead,
		status:   status,
		header:   header,
		body:     body,
		cc:       parseResponseCacheControl(header, sp.targeted),
		timing:   t,
	}
	if !e.headOnly {
		header.Del("Content-Length")
	}
	e.lifetime, _ = freshnessLifetime(status, header, e.cc, t, sp.heuristic)
	e.varyNames = selectingFields(header)
	e.varyValues = make([]string, len(e.varyNames))
	for i, n := range e.varyNames {
		e.varyValues[i] = varyValue(req.Header, n)
	}
	e.setWire()
	e.size = entrySize(e)
	return e
}

// selectingFields returns the request fields that select a stored
// response with header among its variants: the names in Vary, and
// Accept-Encoding for a body with a content coding. A compressed body must
// never reach a client that did not accept it, even when the origin
// forgot Vary: Accept-Encoding.
func selectingFields(header http.Header) []string {
	names := varyNames(header)
	if !containsName(names, "Accept-Encoding") && hasContentCoding(header) {
		names = append(names, "Accept-Encoding")
	}
	return names
}

// varyChanged reports whether e's header selects by other request fields
// than the ones whose values e keeps, as after a 304 that changed Vary.
func (e *entry) varyChanged() bool {
	return !slices.Equal(selectingFields(e.header), e.varyNames)
}

func entrySize(e *entry) int64 {
	n := int64(len(e.body) + len(e.wire) + len(e.primary) + len(e.extra) + entryOverhead)
	for k, vs := range e.header {
		for _, v := range vs {
			n += int64(len(k) + len(v) + 4)
		}
	}
	for i := range e.varyNames {
		n += int64(len(e.varyNames[i]) + len(e.varyValues[i]))
	}
	return n
}

func containsName(names []string, name string) bool {
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

func hasContentCoding(h http.Header) bool {
	ce := strings.TrimSpace(h.Get("Content-Encoding"))
	return ce != "" && !strings.EqualFold(ce, "identity")
}

// matchesVary reports whether the request header h selects e (RFC 9111
// section 4.1).
func (e *entry) matchesVary(h http.Header) bool {
	for i, n := range e.varyNames {
		if varyValue(h, n) != e.varyValues[i] {
			return false
		}
	}
	return true
}

// sameVariant reports whether a and b are stored for the same request
// selection, so that the newer one replaces the older.
func sameVariant(a, b *entry) bool {
	if a.extra != b.extra || len(a.varyNames) != len(b.varyNames) {
		return false
	}
	for i := range a.varyNames {
		if a.varyNames[i] != b.varyNames[i] || a.varyValues[i] != b.varyValues[i] {
			return false
		}
	}
	return true
}

// hasValidator reports whether e can be revalidated.
func (e *entry) hasValidator() bool {
	return e.header.Get("ETag") != "" || e.header.Get("Last-Modified") != ""
}

// lookupResult is the outcome of a lookup, in Cache-Status terms.
type lookupResult int

const (
	lookupHit lookupResult = iota
	lookupURIMiss
	lookupVaryMiss
)

// store is the in-memory LRU of entries bounded by a byte budget. It is safe
// for concurrent use.
type store struct {
	mu      sync.Mutex
	max     int64
	size    int64
	count   int
	byKey   map[string][]*entry
	lru     list.List // front is most recently used
	evicted func(n int)
}

func newStore(maxBytes int64, evicted func(n int)) *store {
	return &store{max: maxBytes, byKey: map[string][]*entry{}, evicted: evicted}
}

// get returns the entry that k and the request header h select, and marks
// it recently used. A HEAD request may use GET entries and HEAD-only ones,
// but a GET request only GET entries. Among several matches the most recent
// response wins (RFC 9111 section 4.1).
func (s *store) get(k requestKey, h http.Header, head bool) (*entry, lookupResult) {
	s.mu.Lock()
	defer s.mu.Unlock()

	variants := s.byKey[k.primary]
	if len(variants) == 0 {
		return nil, lookupURIMiss
	}
	var best *entry
	usable := 0
	for _, e := range variants {
		if e.headOnly && !head {
			continue
		}
		usable++
		if e.extra != k.extra || !e.matchesVary(h) {
			continue
		}
		if best == nil || newer(e, best) {
			best = e
		}
	}
	switch {
	case usable == 0:
		// Only HEAD responses are stored, which a GET cannot use.
		return nil, lookupURIMiss
	case best == nil:
		return nil, lookupVaryMiss
	}
	s.lru.MoveToFront(best.elem)
	return best, lookupHit
}

// newer reports whether a should be preferred over b: a full response over a
// HEAD-only one, then the later Date, then the later arrival.
func newer(a, b *entry) bool {
	if a.headOnly != b.headOnly {
		return !a.headOnly
	}
	if !a.timing.date.Equal(b.timing.date) {
		return a.timing.date.After(b.timing.date)
	}
	return a.timing.responseTime.After(b.timing.responseTime)
}

// insert stores e, replacing the entry for the same variant, and evicts
// least recently used entries until the budget holds. It returns false when
// e alone is larger than the budget.
func (s *store) insert(e *entry) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.size > s.max {
		return false
	}

	variants := s.byKey[e.primary]
	if e.headOnly {
		for _, old := range variants {
			if sameVariant(old, e) && !old.headOnly {
				// Keep the full response, which also serves HEAD.
				return true
			}
		}
	}
	remaining := make([]*entry, 0, len(variants)+1)
	for _, old := range variants {
		if sameVariant(old, e) {
			s.unlinkLocked(old)
			continue
		}
		remaining = append(remaining, old)
	}
	for len(remaining) >= maxVariants {
		oldest := remaining[0]
		s.unlinkLocked(oldest)
		remaining = remaining[1:]
		s.evictedLocked(1)
	}
	s.byKey[e.primary] = append(remaining, e)
	e.elem = s.lru.PushFront(e)
	s.size += e.size
	s.count++

	evicted := 0
	for s.size > s.max {
		victim := s.lru.Back().Value.(*entry)
		s.removeLocked(victim)
		evicted++
	}
	s.evictedLocked(evicted)
	return true
}

func (s *store) evictedLocked(n int) {
	if n > 0 && s.evicted != nil {
		s.evicted(n)
	}
}

// setMax changes the budget and evicts least recently used entries until
// the store fits it.
func (s *store) setMax(maxBytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.max = maxBytes
	evicted := 0
	for s.size > s.max {
		s.removeLocked(s.lru.Back().Value.(*entry))
		evicted++
	}
	s.evictedLocked(evicted)
}

// replace swaps old for updated when old is still stored, and inserts
// updated otherwise.
func (s *store) replace(old, updated *entry) {
	s.mu.Lock()
	present := old.elem != nil && s.contains(old)
	if present {
		s.removeLocked(old)
	}
	s.mu.Unlock()
	s.insert(updated)
}

func (s *store) contains(e *entry) bool {
	for _, v := range s.byKey[e.primary] {
		if v == e {
			return true
		}
	}
	return false
}

// variants returns a copy of the entries stored under primary.
func (s *store) variants(primary string) []*entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*entry(nil), s.byKey[primary]...)
}

// removeEntry drops e if it is still stored.
func (s *store) removeEntry(e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.contains(e) {
		s.removeLocked(e)
	}
}

// remove drops every entry stored under primary and returns how many.
func (s *store) remove(primary string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	variants := s.byKey[primary]
	for _, e := range variants {
		s.unlinkLocked(e)
	}
	delete(s.byKey, primary)
	return len(variants)
}

// removePrefix drops every entry whose primary key starts with prefix and
// returns how many. It scans all keys while holding the lock.
func (s *store) removePrefix(prefix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for primary, variants := range s.byKey {
		if !strings.HasPrefix(primary, prefix) {
			continue
		}
		for _, e := range variants {
			s.unlinkLocked(e)
		}
		n += len(variants)
		delete(s.byKey, primary)
	}
	return n
}

// removeLocked unlinks e and drops it from its key's variants.
func (s *store) removeLocked(e *entry) {
	variants := s.byKey[e.primary]
	for i, v := range variants {
		if v == e {
			variants = append(variants[:i:i], variants[i+1:]...)
			break
		}
	}
	if len(variants) == 0 {
		delete(s.byKey, e.primary)
	} else {
		s.byKey[e.primary] = variants
	}
	s.unlinkLocked(e)
}

// unlinkLocked removes e from the LRU list and the accounting, leaving the
// key map to the caller.
func (s *store) unlinkLocked(e *entry) {
	if e.elem == nil {
		return
	}
	s.lru.Remove(e.elem)
	e.elem = nil
	s.size -= e.size
	s.count--
}

// stats returns the bytes and entries stored.
func (s *store) stats() (size int64, count int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size, s.count
}
