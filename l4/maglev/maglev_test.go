package maglev

import (
	"fmt"
	"math"
	"net/netip"
	"testing"
)

func backends(n int) []Backend {
	out := make([]Backend, n)
	for i := range out {
		out[i] = Backend{ID: fmt.Sprintf("10.0.0.%d:443", i+1), Weight: 1}
	}
	return out
}

func flowHashes(n int) []uint64 {
	out := make([]uint64, n)
	dst := netip.MustParseAddrPort("192.0.2.1:443")
	for i := range out {
		// Even source ports only, as Linux picks them for connect().
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(i >> 14), byte(i >> 6)}), uint16(32768+2*(i&63)))
		out[i] = HashFlow(src, dst)
	}
	return out
}

func TestNewRejectsBadSize(t *testing.T) {
	for _, size := range []uint64{0, 1, 4, 65536} {
		if _, err := New(backends(3), size); err == nil {
			t.Errorf("New(size=%d) succeeded, want an error for a non-prime size", size)
		}
	}
}

func TestNewNoBackend(t *testing.T) {
	_, err := New([]Backend{{ID: "a", Weight: 0}}, 13)
	if err != ErrNoBackend {
		t.Fatalf("New with only zero weights: err = %v, want ErrNoBackend", err)
	}
}

func TestSlotSpreadEven(t *testing.T) {
	for _, n := range []int{2, 3, 5, 7, 10} {
		tbl, err := New(backends(n), DefaultSize)
		if err != nil {
			t.Fatal(err)
		}
		counts := make([]int, n)
		for _, e := range tbl.Entries() {
			counts[e]++
		}
		even := float64(DefaultSize) / float64(n)
		for i, c := range counts {
			if dev := math.Abs(float64(c)-even) / even; dev > 0.01 {
				t.Errorf("%d backends: backend %d owns %d slots, %.2f%% from even %.0f", n, i, c, dev*100, even)
			}
		}
	}
}

func TestFlowSpreadEven(t *testing.T) {
	tbl, err := New(backends(3), DefaultSize)
	if err != nil {
		t.Fatal(err)
	}
	flows := flowHashes(1 << 20)
	counts := make([]int, 3)
	for _, h := range flows {
		counts[tbl.Lookup(h)]++
	}
	even := float64(len(flows)) / 3
	for i, c := range counts {
		if dev := math.Abs(float64(c)-even) / even; dev > 0.01 {
			t.Errorf("backend %d got %d of %d flows, %.2f%% from even", i, c, len(flows), dev*100)
		}
	}
}

func TestWeightsProportional(t *testing.T) {
	bs := []Backend{{ID: "a", Weight: 1}, {ID: "b", Weight: 2}, {ID: "c", Weight: 5}}
	tbl, err := New(bs, DefaultSize)
	if err != nil {
		t.Fatal(err)
	}
	counts := make([]int, 3)
	for _, e := range tbl.Entries() {
		counts[e]++
	}
	for i, b := range bs {
		want := float64(DefaultSize) * float64(b.Weight) / 8
		if dev := math.Abs(float64(counts[i])-want) / want; dev > 0.01 {
			t.Errorf("backend %s (weight %d) owns %d slots, want about %.0f", b.ID, b.Weight, counts[i], want)
		}
	}
}

func TestZeroWeightExcluded(t *testing.T) {
	bs := backends(3)
	bs[1].Weight = 0
	tbl, err := New(bs, DefaultSize)
	if err != nil {
		t.Fatal(err)
	}
	for slot, e := range tbl.Entries() {
		if e == 1 {
			t.Fatalf("slot %d is owned by the zero-weight backend", slot)
		}
	}
}

// TestMinimalDisruption removes one of three backends and checks that the
// flows it owned move and that few flows move between the two survivors.
func TestMinimalDisruption(t *testing.T) {
	before, err := New(backends(3), DefaultSize)
	if err != nil {
		t.Fatal(err)
	}
	// Removing by weight 0 keeps the indexes of the survivors stable.
	bs := backends(3)
	bs[2].Weight = 0
	after, err := New(bs, DefaultSize)
	if err != nil {
		t.Fatal(err)
	}

	flows := flowHashes(10000)
	moved, movedBetweenSurvivors := 0, 0
	for _, h := range flows {
		b, a := before.Lookup(h), after.Lookup(h)
		if b != a {
			moved++
			if b != 2 {
				movedBetweenSurvivors++
			}
		}
	}
	if frac := float64(moved) / float64(len(flows)); frac > 0.36 {
		t.Errorf("%d of %d flows moved (%.1f%%), want about a third", moved, len(flows), frac*100)
	}
	// Maglev trades a little stability for even spread, so a few flows may
	// move between survivors. Allow up to 3% of them.
	if frac := float64(movedBetweenSurvivors) / float64(len(flows)); frac > 0.03 {
		t.Errorf("%d of %d flows moved between surviving backends (%.2f%%)", movedBetweenSurvivors, len(flows), frac*100)
	}
	t.Logf("moved %d of %d flows, %d between survivors", moved, len(flows), movedBetweenSurvivors)
}

func TestDeterministic(t *testing.T) {
	a, _ := New(backends(4), 251)
	b, _ := New(backends(4), 251)
	ea, eb := a.Entries(), b.Entries()
	for i := range ea {
		if ea[i] != eb[i] {
			t.Fatalf("slot %d differs between two builds: %d vs %d", i, ea[i], eb[i])
		}
	}
}

func TestPreference(t *testing.T) {
	tbl, _ := New(backends(3), DefaultSize)
	for _, h := range flowHashes(100) {
		p := tbl.Preference(h, 3)
		if len(p) != 3 {
			t.Fatalf("Preference(%#x, 3) = %v, want 3 distinct backends", h, p)
		}
		if p[0] != tbl.Lookup(h) {
			t.Fatalf("Preference(%#x)[0] = %d, want Lookup = %d", h, p[0], tbl.Lookup(h))
		}
		if p[0] == p[1] || p[1] == p[2] || p[0] == p[2] {
			t.Fatalf("Preference(%#x) = %v has repeats", h, p)
		}
	}
}

func BenchmarkLookup(b *testing.B) {
	tbl, _ := New(backends(10), DefaultSize)
	src := netip.MustParseAddrPort("198.51.100.7:40000")
	dst := netip.MustParseAddrPort("192.0.2.1:443")
	b.ReportAllocs()
	for b.Loop() {
		_ = tbl.Lookup(HashFlow(src, dst))
	}
}

func BenchmarkNew(b *testing.B) {
	bs := backends(10)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := New(bs, DefaultSize); err != nil {
			b.Fatal(err)
		}
	}
}
