package l7

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// maxCachedSeries bounds a seriesCache. Label values come from the
// configuration, the method and the status class, so a cache reaches it
// only with hundreds of routes or backends. Beyond it, requests look up
// their series in the vectors.
const maxCachedSeries = 1024

// seriesKey is the label values of the series one request updates, in
// the order the cache's series function reads them.
type seriesKey [4]string

// requestSeries is the counter and the histogram one request updates.
type requestSeries struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

// seriesCache keeps requestSeries by label values, so that a request finds
// its series with one map lookup instead of hashing and checking its label
// values in two vectors. Readers load the map without a lock, and writers
// replace it with a copy.
type seriesCache struct {
	// series makes the series of a key from the vectors.
	series func(seriesKey) requestSeries

	m  atomic.Pointer[map[seriesKey]requestSeries]
	mu sync.Mutex
	// gen counts resets. A series made before a reset may have been
	// deleted from its vector, so it is not stored after the reset.
	gen atomic.Uint64
}

// get returns the series of k, from the cache or made and then stored.
func (c *seriesCache) get(k seriesKey) requestSeries {
	if m := c.m.Load(); m != nil {
		if s, ok := (*m)[k]; ok {
			return s
		}
	}
	gen := c.gen.Load()
	s := c.series(k)

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen.Load() != gen {
		return s
	}
	next := map[seriesKey]requestSeries{k: s}
	if old := c.m.Load(); old != nil {
		if len(*old) >= maxCachedSeries {
			return s
		}
		for key, v := range *old {
			next[key] = v
		}
	}
	c.m.Store(&next)
	return s
}

// reset empties the cache. Call it after deleting series from the
// vectors, so that no deleted series stays in use.
func (c *seriesCache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen.Add(1)
	c.m.Store(nil)
}
