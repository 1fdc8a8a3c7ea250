package asyncmonolith_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// ProcessBatch records a run's outcome when the run ends, not once the slowest run of its
// claim has ended: leases are per consumer, so a quick consumer's message (lease 12 s)
// claimed beside a slow one's (timeout 1 h) would otherwise stay claimed, its success
// unrecorded, past its lease, and another instance would claim it and run it again.
func TestReviewProcessBatchRecordsEachRunAsItEnds(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		cfg := am.Config{ConsumerConcurrency: 2, AbandonGrace: time.Second, LeaseMargin: 10 * time.Second}
		e := setup(t, dialect, cfg)
		cfg.Clock = e.clock
		other := instance(t, e.db, dialect, cfg)
		var quickRuns atomic.Int32
		quickDone, slowRunning, release := make(chan struct{}, 2), make(chan struct{}, 1), make(chan struct{})
		quick := am.ConsumerFunc[Job](func(context.Context, *am.Message[Job]) error {
			quickRuns.Add(1)
			quickDone <- struct{}{}
			return nil
		})
		slow := am.ConsumerFunc[Job](func(ctx context.Context, _ *am.Message[Job]) error {
			slowRunning <- struct{}{}
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		for _, p := range []*am.Plugin{e.p, other} {
			if err := am.Register[Job](p, quick, am.WithName("Quick"), am.WithTimeout(time.Second)); err != nil {
				t.Fatal(err)
			}
			if err := am.Register[Job](p, slow, am.WithName("Slow"), am.WithTimeout(time.Hour)); err != nil {
				t.Fatal(err)
			}
		}
		released := false
		t.Cleanup(func() {
			if !released {
				close(release)
			}
		})
		produceRetryJobs(t, e, Job{N: 1}) // one message for each consumer, in one claim
		wait := e.batchAsync(t)
		recv(t, quickDone, "the quick consumer runs")
		recv(t, slowRunning, "the slow consumer runs")
		// The quick run's success is recorded while the slow run goes on.
		eventually(t, func() bool { _, ok := rowsByConsumer(t, e)["Quick"]; return !ok },
			"the quick message's success recorded while the slow one runs")
		e.clock.Advance(13 * time.Second) // past the quick message's lease, well within the slow one's
		if _, err := other.ProcessBatch(context.Background()); err != nil {
			t.Fatal(err)
		}
		released = true
		close(release)
		if n := wait(); n != 2 {
			t.Fatalf("ProcessBatch claimed %d, want 2", n)
		}
		if n := quickRuns.Load(); n != 1 || e.pending(t) != 0 {
			t.Fatalf("the quick message ran %d times (%d messages left, counters %+v); want once, none left", n, e.pending(t), e.p.Counters())
		}
	})
}
