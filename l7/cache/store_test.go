package cache

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func testEntry(primary string, bodySize int, fields ...string) *entry {
	h := header(append([]string{"Date", httpDate(t0), "Cache-Control", "max-age=60"}, fields...)...)
	req := httptestRequest("GET")
	return newEntry(requestKey{primary: primary}, req, 200, h, []byte(strings.Repeat("x", bodySize)), newTiming(h, t0, t0), testStorePolicy)
}

func TestStoreEvictsLeastRecentlyUsed(t *testing.T) {
	sample := testEntry("GET http://h/1", 1000)
	budget := 3*sample.size + sample.size/2
	evicted := 0
	s := newStore(budget, func(n int) { evicted += n })

	for i := 1; i <= 3; i++ {
		if !s.insert(testEntry(fmt.Sprintf("GET http://h/%d", i), 1000)) {
			t.Fatalf("insert %d failed", i)
		}
	}
	// Use /1 so that /2 is the least recently used.
	if e, _ := s.get(requestKey{primary: "GET http://h/1"}, http.Header{}, false); e == nil {
		t.Fatal("get /1 = nil")
	}
	s.insert(testEntry("GET http://h/4", 1000))

	if evicted != 1 {
		t.Errorf("evicted = %d, want 1", evicted)
	}
	for _, tc := range []struct {
		path   string
		stored bool
	}{{"/1", true}, {"/2", false}, {"/3", true}, {"/4", true}} {
		e, _ := s.get(requestKey{primary: "GET http://h" + tc.path}, http.Header{}, false)
		if (e != nil) != tc.stored {
			t.Errorf("after eviction %s stored = %v, want %v", tc.path, e != nil, tc.stored)
		}
	}
	size, count := s.stats()
	if size > budget || count != 3 {
		t.Errorf("stats = %d bytes, %d entries; want at most %d bytes and 3 entries", size, count, budget)
	}
}

func TestStoreRejectsEntryOverBudget(t *testing.T) {
	s := newStore(4096, nil)
	if s.insert(testEntry("GET http://h/big", 8192)) {
		t.Error("insert of an entry larger than the budget succeeded")
	}
	if size, count := s.stats(); size != 0 || count != 0 {
		t.Errorf("stats = %d, %d; want 0, 0", size, count)
	}
}

func TestStoreReplacesSameVariant(t *testing.T) {
	s := newStore(1<<20, nil)
	a := testEntry("GET http://h/v", 10, "Vary", "Accept-Language")
	b := testEntry("GET http://h/v", 20, "Vary", "Accept-Language")
	s.insert(a)
	s.insert(b)
	if _, count := s.stats(); count != 1 {
		t.Fatalf("entries = %d, want 1 after storing the same variant twice", count)
	}
	e, _ := s.get(requestKey{primary: "GET http://h/v"}, http.Header{}, false)
	if e != b {
		t.Error("get returned the older entry")
	}
	size, _ := s.stats()
	if size != b.size {
		t.Errorf("size = %d, want %d", size, b.size)
	}
}

func TestStoreBoundsVariantsPerURI(t *testing.T) {
	s := newStore(64<<20, nil)
	for i := range maxVariants + 10 {
		req := httptestRequest("GET", "X-Id", fmt.Sprint(i))
		h := header("Date", httpDate(t0), "Cache-Control", "max-age=60", "Vary", "X-Id")
		s.insert(newEntry(requestKey{primary: "GET http://h/many"}, req, 200, h, nil, newTiming(h, t0, t0), testStorePolicy))
	}
	if _, count := s.stats(); count != maxVariants {
		t.Errorf("entries = %d, want %d", count, maxVariants)
	}
	if e, _ := s.get(requestKey{primary: "GET http://h/many"}, header("X-Id", "0"), false); e != nil {
		t.Error("oldest variant still stored")
	}
	if e, _ := s.get(requestKey{primary: "GET http://h/many"}, header("X-Id", fmt.Sprint(maxVariants+9)), false); e == nil {
		t.Error("newest variant missing")
	}
}

func TestStoreRemovePrefix(t *testing.T) {
	s := newStore(1<<20, nil)
	for _, p := range []string{"GET http://h/a/1", "GET http://h/a/2", "GET http://h/ab", "GET http://h/b", "GET http://other/a/1"} {
		s.insert(testEntry(p, 1))
	}
	if n := s.removePrefix("GET http://h/a/"); n != 2 {
		t.Errorf("removePrefix(/a/) = %d, want 2", n)
	}
	if n := s.remove("GET http://h/b"); n != 1 {
		t.Errorf("remove(/b) = %d, want 1", n)
	}
	if _, count := s.stats(); count != 2 {
		t.Errorf("entries left = %d, want 2", count)
	}
}

func TestStoreLookupResult(t *testing.T) {
	s := newStore(1<<20, nil)
	s.insert(testEntry("GET http://h/v", 1, "Vary", "Accept-Language"))
	if _, res := s.get(requestKey{primary: "GET http://h/none"}, http.Header{}, false); res != lookupURIMiss {
		t.Errorf("unknown URI: result %v, want uri-miss", res)
	}
	if _, res := s.get(requestKey{primary: "GET http://h/v"}, header("Accept-Language", "de"), false); res != lookupVaryMiss {
		t.Errorf("other language: result %v, want vary-miss", res)
	}
}

func TestStoreSetMaxEvicts(t *testing.T) {
	evicted := 0
	s := newStore(1<<20, func(n int) { evicted += n })
	for i := range 10 {
		s.insert(testEntry(fmt.Sprintf("GET http://h/%d", i), 1000))
	}
	sample := testEntry("GET http://h/x", 1000)
	s.setMax(3 * sample.size)
	size, count := s.stats()
	if count != 3 || size > 3*sample.size {
		t.Errorf("after setMax: %d entries, %d bytes; want 3 entries within %d bytes", count, size, 3*sample.size)
	}
	if evicted != 7 {
		t.Errorf("evicted = %d, want 7", evicted)
	}
	if e, _ := s.get(requestKey{primary: "GET http://h/9"}, http.Header{}, false); e == nil {
		t.Error("most recent entry was evicted")
	}
}

func TestCacheRejectsZeroBudget(t *testing.T) {
	if _, err := New(Config{}, nil, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("New with no budget: err = %v, want ErrInvalidConfig", err)
	}
	c, err := New(Config{MaxBytes: 1 << 20}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Resize(0); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Resize(0): err = %v, want ErrInvalidConfig", err)
	}
	if err := c.Resize(2 << 20); err != nil {
		t.Errorf("Resize(2MiB): %v", err)
	}
}
