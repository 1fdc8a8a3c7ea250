package asyncmonolith_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// A consumer registered WithConcurrency(1) while a claim is on its way — the claim read the
// consumers (and their limits) before the registration, and its statement runs after the
// consumer's messages were produced — runs one message at a time all the same: the claim
// takes its messages unlimited, so the runs hold a slot each or go back at once, due
// again without an attempt counted, for a claim that knows the limit.
func TestReviewLimitRegisteredDuringAClaimHolds(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		c := newClock()
		var armed atomic.Bool
		caught, proceed := make(chan struct{}), make(chan struct{})
		hook := readHook{clock: c, now: func() time.Time {
			if armed.CompareAndSwap(true, false) {
				caught <- struct{}{} // the claim's due time: its consumers are read already
				<-proceed
			}
			return c.Now()
		}}
		e := setup(t, dialect, am.Config{Clock: hook, DisableBreaker: true})
		if err := am.Register[fastJob](e.p, &recorder[fastJob]{}, am.WithName("Other")); err != nil {
			t.Fatal(err)
		}
		armed.Store(true)
		wait := e.batchAsync(t)
		recv(t, caught, "the claim reads the clock")
		var g peakGauge
		var mu sync.Mutex
		runs := map[string]int{}
		release := make(chan struct{})
		released := false
		t.Cleanup(func() {
			if !released {
				close(release)
			}
		})
		if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
			g.enter()
			defer g.leave()
			mu.Lock()
			runs[m.ID]++
			mu.Unlock()
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		}), am.WithName("LateSerial"), am.WithConcurrency(1)); err != nil {
			t.Fatal(err)
		}
		produceRetryJobs(t, e, Job{N: 1}, Job{N: 2}, Job{N: 3})
		close(proceed)
		// The claim takes the three messages: each runs, or is handed back.
		eventually(t, func() bool { return g.cur.Load()+int64(e.p.Counters().Released) == 3 }, "the claimed messages run or go back")
		if p := g.peak.Load(); p != 1 {
			t.Fatalf("LateSerial ran %d messages at once, limit 1", p)
		}
		released = true
		close(release)
		wait()
		for mustBatch(t, e) > 0 {
		}
		mu.Lock()
		defer mu.Unlock()
		if len(runs) != 3 || e.pending(t) != 0 || g.peak.Load() != 1 {
			t.Fatalf("ran %v, %d left, peak %d; want each of the 3 once, one at a time", runs, e.pending(t), g.peak.Load())
		}
		for id, n := range runs {
			if n != 1 {
				t.Fatalf("message %s ran %d times, want once", id, n)
			}
		}
	})
}
