package asyncmonolith_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// Two instances on one database (row locks), each with two processors, run a
// WithConcurrency(1) consumer whose runs fail once (retried at once), then snooze once (due
// at once), then succeed: in each process at most one of its runs goes at a time, whatever
// the retries and snoozes in between; every message ends done after exactly its three runs,
// none run twice at once across the instances.
func TestReviewConcurrencyOneAcrossInstancesWithRetriesAndSnoozes(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		if !caps(dialect).RowLocks() {
			t.Skip("one processor per plugin on a database without row locks: covered by TestConcurrencyOneKeepsDueOrder")
		}
		const total = 24
		cfg := am.Config{ConsumerProcessors: 2, DisableBreaker: true, RetryPolicy: am.FixedDelay(0), ProcessorMinDelay: time.Millisecond}
		e := setup(t, dialect, cfg)
		cfg.Clock = e.clock
		other := instance(t, e.db, dialect, cfg)
		var mu sync.Mutex
		runs := map[string]int{}
		running := map[string]bool{} // message id → running somewhere
		var overlap atomic.Int32
		consumer := func() am.ConsumerFunc[Job] {
			var here atomic.Int32 // this process's runs going now
			return func(_ context.Context, m *am.Message[Job]) error {
				if here.Add(1) > 1 {
					overlap.Add(1)
				}
				defer here.Add(-1)
				mu.Lock()
				if running[m.ID] {
					overlap.Add(1)
				}
				running[m.ID] = true
				runs[m.ID]++
				k := runs[m.ID]
				mu.Unlock()
				defer func() { mu.Lock(); running[m.ID] = false; mu.Unlock() }()
				switch k {
				case 1:
					return errors.New("first run fails")
				case 2:
					return am.SnoozeFor(0)
				}
				return nil
			}
		}
		for _, p := range []*am.Plugin{e.p, other} {
			if err := am.Register[Job](p, consumer(), am.WithName("Serial"), am.WithConcurrency(1)); err != nil {
				t.Fatal(err)
			}
		}
		jobs := make([]Job, total)
		for i := range jobs {
			jobs[i].N = i
		}
		produceRetryJobs(t, e, jobs...)
		e.start(t)
		if err := other.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = other.Stop(ctx)
		})
		eventually(t, func() bool { return e.pending(t) == 0 }, "every message done")
		mu.Lock()
		defer mu.Unlock()
		if overlap.Load() != 0 {
			t.Errorf("%d overlaps: two runs at once in one process, or one message run twice at once", overlap.Load())
		}
		for id, k := range runs {
			if k != 3 {
				t.Errorf("message %s ran %d times, want 3 (fail, snooze, succeed)", id, k)
			}
		}
		if len(runs) != total {
			t.Errorf("%d messages ran, want %d", len(runs), total)
		}
	})
}
