package asyncmonolith_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// WithConcurrency(1) runs a consumer's messages one at a time in due order, across every
// processor of its rail, and a consumer held at its limit does not hold up the others.
func TestConcurrencyOneKeepsDueOrder(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{ConsumerProcessors: railProcessors(dialect)})
		var g peakGauge
		var mu sync.Mutex
		var order []int
		first := make(chan struct{})
		var firstOnce sync.Once
		if err := am.Register(e.p, am.ConsumerFunc[slowJob](func(ctx context.Context, m *am.Message[slowJob]) error {
			g.enter()
			defer g.leave()
			mu.Lock()
			order = append(order, m.Payload.N)
			mu.Unlock()
			if m.Payload.N == 0 {
				firstOnce.Do(func() { <-first }) // hold the consumer at its limit
			}
			return nil
		}), am.WithName("Sequential"), am.WithConcurrency(1)); err != nil {
			t.Fatal(err)
		}
		var others recorder[fastJob]
		if err := am.Register(e.p, &others, am.WithName("Other")); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		// Due times out of production order: N is the due order.
		base := e.clock.Now().Add(-time.Hour)
		perm := []int{7, 3, 0, 12, 5, 1, 9, 14, 2, 11, 6, 13, 4, 10, 8}
		for _, n := range perm {
			if err := am.ProduceNow(ctx, e.db, slowJob{n}, am.At(base.Add(time.Duration(n)*time.Second))); err != nil {
				t.Fatal(err)
			}
			if err := am.ProduceNow(ctx, e.db, fastJob{n}, am.At(base.Add(time.Duration(n)*time.Second))); err != nil {
				t.Fatal(err)
			}
		}
		e.start(t)
		eventually(t, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return others.count() == len(perm) && len(order) > 0
		}, "the other consumer's messages consumed while Sequential is held at its limit")
		mu.Lock()
		held := slices.Clone(order)
		mu.Unlock()
		if !slices.Equal(held, []int{0}) {
			t.Fatalf("Sequential ran %v while its first message was still running", held)
		}
		if n := e.count(t, &am.ConsumerMessage{}, "consumer_type = ? AND pending IS NULL", "Sequential"); n != 1 {
			t.Fatalf("%d Sequential messages claimed while it runs one at a time, want 1 (the others must stay unclaimed)", n)
		}
		close(first)
		eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(order) == len(perm) }, "every Sequential message consumed")
		mu.Lock()
		defer mu.Unlock()
		if !slices.IsSorted(order) {
			t.Fatalf("Sequential ran its messages in %v, not in due order", order)
		}
		if p := g.peak.Load(); p != 1 {
			t.Fatalf("Sequential ran %d messages at once", p)
		}
	})
}

// WithConcurrency(n) never runs more than n of a consumer's messages at once, across the
// rail's processors, and reaches n when the backlog allows.
func TestConcurrencyLimitNeverExceeded(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{ConsumerProcessors: railProcessors(dialect), ProcessorBatchSize: 10})
		const limit = 3
		var g peakGauge
		reached := make(chan struct{})
		var reachedOnce sync.Once
		var done atomic.Int64
		if err := am.Register(e.p, am.ConsumerFunc[slowJob](func(ctx context.Context, m *am.Message[slowJob]) error {
			g.enter()
			defer g.leave()
			if g.cur.Load() == limit {
				reachedOnce.Do(func() { close(reached) })
			}
			select { // work that overlaps with the other runs until the limit was reached once
			case <-reached:
			case <-time.After(20 * time.Millisecond):
			}
			done.Add(1)
			return nil
		}), am.WithName("Limited"), am.WithConcurrency(limit)); err != nil {
			t.Fatal(err)
		}
		jobs := make([]slowJob, 60)
		produceAll(t, e.db, jobs)
		e.start(t)
		eventually(t, func() bool { return done.Load() == 60 }, "every message consumed")
		if p := g.peak.Load(); p != limit {
			t.Fatalf("Limited ran at most %d messages at once, want exactly %d", p, limit)
		}
	})
}

// ProcessBatch respects WithConcurrency too: a limit-1 consumer's messages go one per
// claim, in due order.
func TestProcessBatchKeepsTheLimit(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{Rails: map[string]am.RailConfig{"slow": {}}})
		var seq recorder[slowJob]
		if err := am.Register(e.p, &seq, am.WithName("Sequential"), am.WithConcurrency(1), am.WithRail("slow")); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		base := e.clock.Now().Add(-time.Minute)
		for _, n := range []int{2, 0, 1} {
			if err := am.ProduceNow(ctx, e.db, slowJob{n}, am.At(base.Add(time.Duration(n)*time.Second))); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 3 {
			n, err := e.p.ProcessBatch(ctx)
			if err != nil || n != 1 {
				t.Fatalf("ProcessBatch %d: %d, %v; want 1 (one at a time)", i, n, err)
			}
		}
		var got []int
		for _, m := range seq.messages() {
			got = append(got, m.Payload.N)
		}
		if !slices.Equal(got, []int{0, 1, 2}) {
			t.Fatalf("ran %v, want due order [0 1 2]", got)
		}
	})
}
