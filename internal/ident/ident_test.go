package ident

import (
	"sort"
	"testing"
	"time"
)

func TestIDsAreUniqueAndOrdered(t *testing.T) {
	t.Parallel()
	var g Generator
	base := time.UnixMilli(1_700_000_000_000)
	ids := make([]string, 0, 3000)
	for i := range 3000 {
		ids = append(ids, g.New(base.Add(time.Duration(i/1000)*time.Millisecond)))
	}
	if !sort.StringsAreSorted(ids) {
		t.Fatal("ids are not in creation order")
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if len(id) != 26 {
			t.Fatalf("id %q has length %d, want 26", id, len(id))
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
}

func TestClockGoingBackKeepsOrder(t *testing.T) {
	t.Parallel()
	var g Generator
	a := g.New(time.UnixMilli(2_000))
	b := g.New(time.UnixMilli(1_000))
	if b <= a {
		t.Fatalf("id after a clock step back %q sorts before %q", b, a)
	}
}
