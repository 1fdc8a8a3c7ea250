package asyncmonolith_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

func TestDedupSkipsPendingDuplicates(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		a, b := registerBoth(t, e)
		ctx := context.Background()
		// A duplicate inside the caller's transaction is skipped without aborting it
		// (on PostgreSQL a failed insert would abort the transaction).
		err := e.db.Transaction(func(tx *gorm.DB) error {
			for range 3 {
				if err := am.Produce(tx, OrderCancelled{OrderID: "1"}, am.InsertID("order:1")).Error; err != nil {
					return err
				}
			}
			return tx.Create(&Order{ID: "1"}).Error
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := e.pending(t); got != 2 {
			t.Fatalf("%d rows, want 2 (one per consumer)", got)
		}
		if got := e.count(t, &Order{}); got != 1 {
			t.Fatal("the caller's transaction did not commit")
		}
		mustBatch(t, e)
		if a.count() != 1 || b.count() != 1 {
			t.Fatalf("runs: %d, %d", a.count(), b.count())
		}
		// Consumed: the same insert id may be produced again.
		if err := am.ProduceNow(ctx, e.db, OrderCancelled{OrderID: "1"}, am.InsertID("order:1")); err != nil {
			t.Fatal(err)
		}
		if got := e.pending(t); got != 2 {
			t.Fatalf("re-produce after consume: %d rows, want 2", got)
		}
	})
}

func TestDedupUnderConcurrentProducers(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		registerBoth(t, e)
		const producers = 20
		var wg sync.WaitGroup
		errs := make([]error, producers)
		for i := range producers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = am.ProduceNow(context.Background(), e.db, OrderCancelled{OrderID: "x"}, am.InsertID("same"))
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil && !errors.Is(err, am.ErrRetryable) {
				t.Errorf("producer %d: %v (a failure must be retryable)", i, err)
			}
		}
		if got := e.pending(t); got != 2 {
			t.Fatalf("%d pending rows for one insert id, want 2 (one per consumer)", got)
		}
	})
}
