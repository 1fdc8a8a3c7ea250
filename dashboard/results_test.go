package dashboard

import (
	"testing"
	"time"
)

// A Handler keeps its last resultsKept results for resultTTL, each for its owner only.
func TestResultStoreBoundedByCountAndAge(t *testing.T) {
	t.Parallel()
	s := newResultStore()
	now := time.Date(2026, 1, 5, 12, 0, 0, 0, time.UTC)
	var keys []string
	for i := range resultsKept + 10 {
		keys = append(keys, s.put(storedResult{owner: "me", status: 200 + i}, now))
	}
	if len(s.byKey) != resultsKept || len(s.order) != resultsKept {
		t.Fatalf("%d results kept (%d in order), want %d", len(s.byKey), len(s.order), resultsKept)
	}
	if _, ok := s.get(keys[9], "me", now); ok {
		t.Fatal("the 10th oldest result is still kept past the bound")
	}
	if r, ok := s.get(keys[10], "me", now); !ok || r.status != 210 {
		t.Fatalf("the oldest kept result: %+v, %v", r, ok)
	}
	if _, ok := s.get(keys[10], "someone else", now); ok {
		t.Fatal("another browser read the result")
	}
	if _, ok := s.get(keys[10], "", now); ok {
		t.Fatal("a browser without a cookie read the result")
	}
	late := s.put(storedResult{owner: "me"}, now.Add(resultTTL/2))
	if _, ok := s.get(keys[len(keys)-1], "me", now.Add(resultTTL)); ok {
		t.Fatal("a result is shown after resultTTL")
	}
	if _, ok := s.get(late, "me", now.Add(resultTTL)); !ok {
		t.Fatal("a younger result was dropped with the old ones")
	}
	if len(s.byKey) != 1 || len(s.order) != 1 {
		t.Fatalf("after expiry %d results kept, want 1", len(s.byKey))
	}
}
