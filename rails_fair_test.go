package asyncmonolith_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// A consumer whose WithConcurrency limit covers all of its rail's slots does not starve the
// rail's other consumers: with a backlog of its messages, a message of another consumer,
// due an hour before them, runs within the first two claims (the limited consumers' part
// and the others' take turns going first).
func TestLimitedConsumerDoesNotStarveItsRail(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{ConsumerConcurrency: 2, ProcessorBatchSize: 2})
		var mu sync.Mutex
		var order []string
		record := func(name string) {
			mu.Lock()
			defer mu.Unlock()
			order = append(order, name)
		}
		if err := am.Register(e.p, am.ConsumerFunc[slowJob](func(context.Context, *am.Message[slowJob]) error {
			record("L")
			return nil
		}), am.WithName("Limited"), am.WithConcurrency(2)); err != nil {
			t.Fatal(err)
		}
		if err := am.Register(e.p, am.ConsumerFunc[fastJob](func(context.Context, *am.Message[fastJob]) error {
			record("U")
			return nil
		}), am.WithName("Unlimited")); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := am.ProduceNow(ctx, e.db, fastJob{1}, am.At(e.clock.Now().Add(-time.Hour))); err != nil {
			t.Fatal(err)
		}
		for n := range 6 {
			if err := am.ProduceNow(ctx, e.db, slowJob{n}); err != nil {
				t.Fatal(err)
			}
		}
		for range 10 { // batches of 2 until none is left
			if n := mustBatch(t, e); n == 0 {
				break
			}
		}
		if e.pending(t) != 0 {
			t.Fatalf("%d messages left", e.pending(t))
		}
		mu.Lock()
		defer mu.Unlock()
		if i := slices.Index(order, "U"); i < 0 || i >= 4 {
			t.Fatalf("runs in the order %v: the message due an hour earlier ran after %d of the limited consumer's, want within the first two claims (4 runs)", order, i)
		}
	})
}
