package breaker

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestBreakerTripsDoublesAndRecovers(t *testing.T) {
	t.Parallel()
	s := New(Config{Threshold: 3, Cooldown: 10 * time.Second, MaxCooldown: 25 * time.Second})
	for i := range 2 {
		if until, _ := s.Record("c", true, t0); !until.IsZero() {
			t.Fatalf("failure %d tripped below the threshold", i+1)
		}
	}
	if !s.PausedUntil("c", t0).IsZero() {
		t.Fatal("paused before tripping")
	}
	until, _ := s.Record("c", true, t0)
	if want := t0.Add(10 * time.Second); !until.Equal(want) {
		t.Fatalf("first trip until %v, want %v", until, want)
	}
	if got := s.PausedUntil("c", t0.Add(9*time.Second)); !got.Equal(until) {
		t.Fatalf("PausedUntil during the cooldown = %v", got)
	}
	if got := s.PausedUntil("other", t0); !got.IsZero() {
		t.Fatal("another consumer is paused")
	}
	// Half open after the cooldown: one failed probe trips again, twice as long.
	t1 := t0.Add(10 * time.Second)
	if !s.PausedUntil("c", t1).IsZero() {
		t.Fatal("still paused after the cooldown")
	}
	if until, _ := s.Record("c", true, t1); !until.Equal(t1.Add(20 * time.Second)) {
		t.Fatalf("second trip until %v, want +20s", until)
	}
	// The third trip is capped at MaxCooldown.
	t2 := t1.Add(20 * time.Second)
	if until, _ := s.Record("c", true, t2); !until.Equal(t2.Add(25 * time.Second)) {
		t.Fatalf("third trip until %v, want +25s (the cap)", until)
	}
	if p := s.Paused(t2); len(p) != 1 || !p["c"].Equal(t2.Add(25*time.Second)) {
		t.Fatalf("Paused = %v", p)
	}
	// A run recorded during the pause (started before the trip) does not extend it.
	if until, _ := s.Record("c", true, t2.Add(time.Second)); !until.IsZero() {
		t.Fatal("a failure during the pause tripped again")
	}
	// A successful probe closes the breaker and reports the recovery.
	t3 := t2.Add(25 * time.Second)
	if _, recovered := s.Record("c", false, t3); !recovered {
		t.Fatal("a successful probe after trips did not report recovery")
	}
	if len(s.Paused(t3)) != 0 || !s.PausedUntil("c", t3).IsZero() {
		t.Fatal("paused after recovery")
	}
	if _, recovered := s.Record("c", false, t3); recovered {
		t.Fatal("a second success reported recovery again")
	}
}

func TestBreakerSuccessResetsTheCount(t *testing.T) {
	t.Parallel()
	s := New(Config{Threshold: 2, Cooldown: time.Second, MaxCooldown: time.Second})
	s.Record("c", true, t0)
	if _, recovered := s.Record("c", false, t0); recovered {
		t.Fatal("success without a trip reported recovery")
	}
	if until, _ := s.Record("c", true, t0); !until.IsZero() {
		t.Fatal("the count survived a success")
	}
}

func TestBreakerDisabled(t *testing.T) {
	t.Parallel()
	s := New(Config{Threshold: 1, Cooldown: time.Second, MaxCooldown: time.Second, Disabled: true})
	if until, _ := s.Record("c", true, t0); !until.IsZero() || !s.PausedUntil("c", t0).IsZero() {
		t.Fatal("a disabled breaker paused")
	}
}
