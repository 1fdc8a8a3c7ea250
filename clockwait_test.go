package asyncmonolith_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// These helpers drive the test clock (env.clock) for tests of timeouts and AbandonGrace:
// the engine's consumer timers run on it, so a test moves time itself, at the moment it
// chooses, instead of waiting for real timers.

// batchAsync runs one ProcessBatch in its own goroutine, so that the test can advance the
// clock while the batch's consumers run. The returned function waits for the batch
// (20 s at most) and returns its count.
func (e *env) batchAsync(t *testing.T) func() int {
	t.Helper()
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := e.p.ProcessBatch(context.Background())
		done <- result{n, err}
	}()
	return func() int {
		t.Helper()
		select {
		case r := <-done:
			if r.err != nil {
				t.Fatalf("ProcessBatch: %v", r.err)
			}
			return r.n
		case <-time.After(20 * time.Second):
			t.Fatal("ProcessBatch did not return: a consumer's timer on the test clock was never advanced past?")
			return 0
		}
	}
}

// waitTimer waits until a timer of the test clock falls due within d from now: the code
// under test has set the timer that advancing d fires.
func (e *env) waitTimer(t *testing.T, d time.Duration) {
	t.Helper()
	eventually(t, func() bool {
		next, ok := e.clock.NextTimer()
		return ok && !next.After(e.clock.Now().Add(d))
	}, "a timer on the test clock due within "+d.String())
}

// advanceWhenDue waits until a timer falls due within d, then advances the clock by d:
// the deterministic way to fire a consumer's timeout (once the consumer runs) or its
// AbandonGrace (once its context has ended).
func (e *env) advanceWhenDue(t *testing.T, d time.Duration) {
	t.Helper()
	e.waitTimer(t, d)
	e.clock.Advance(d)
}

// advanceWhenTimers waits until ready holds and exactly n timers wait on the test clock
// (the runs that end by themselves have stopped theirs), then advances the clock by d.
func (e *env) advanceWhenTimers(t *testing.T, n int, d time.Duration, ready func() bool) {
	t.Helper()
	eventually(t, func() bool { return ready() && e.clock.Timers() == n }, fmt.Sprintf("%d timers on the test clock", n))
	e.clock.Advance(d)
}

// advanceUntil advances the test clock by step, again and again, until cond holds (20 s of
// real time at most): for timers set at moments the test cannot observe. Each step waits
// a moment of real time for the code under test to react; it is a wait on cond, not a
// sleep: it returns as soon as cond holds. Each step is taken holding gate, unless it is
// nil: the code under test holds it to keep the clock still across a span it must not
// fall into.
func (e *env) advanceUntil(t *testing.T, gate sync.Locker, cond func() bool, step time.Duration, what string) {
	t.Helper()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(20 * time.Second)
	for !cond() {
		if gate != nil {
			gate.Lock()
		}
		e.clock.Advance(step)
		if gate != nil {
			gate.Unlock()
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("advancing the clock by %s steps: not met within 20s: %s", step, what)
		}
	}
}

// recv receives from ch (20 s at most): a consumer saying it got somewhere.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting: %s", what)
		var zero T
		return zero
	}
}
