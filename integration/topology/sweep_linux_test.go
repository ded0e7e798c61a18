//go:build linux

package topology

import "testing"

func TestStaleNames(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"tge-apt.log", false},
		{"tge-full.log", false},
		{"tge-12ab-1-sw", false},
		{"other-1-1-sw", false},
		{"tge-0-1-sw", false},
	}
	for _, tc := range tests {
		if got := stale(tc.name); got != tc.want {
			t.Errorf("stale(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}
