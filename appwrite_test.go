package asyncmonolith_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

// TestAppWriteIsNotBlockedByWaitingConsumers: consumers that wait without touching the
// database hold nothing the application needs. With 24 queued messages whose consumer
// blocks until the test releases it, the application's own transaction (an order and a
// message produced with it) commits while they wait. On SQLite this is the write lock:
// a processor that kept its batch's transaction open while consumers wait holds the only
// write lock, and the application's transaction waits for it.
func TestAppWriteIsNotBlockedByWaitingConsumers(t *testing.T) {
	t.Parallel()
	const queued = 24
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, quiet(am.Config{}))
		registerBoth(t, e)
		release := make(chan struct{})
		released := false
		releaseAll := func() {
			if !released {
				released = true
				close(release)
			}
		}
		defer releaseAll() // before the processors' Stop (cleanup), on every way out
		var inside atomic.Int64
		if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
			inside.Add(1)
			defer inside.Add(-1)
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}), am.WithName("Waiter")); err != nil {
			t.Fatal(err)
		}
		produceJobs(t, e.db, queued)
		e.start(t)
		eventually(t, func() bool { return inside.Load() > 0 }, "a consumer is waiting")

		// The guard fails the test instead of hanging it if the write waits for the consumers.
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		defer cancel()
		err := e.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			if err := tx.Create(&Order{ID: "o-1", Status: "new"}).Error; err != nil {
				return err
			}
			return am.Produce(tx, OrderCancelled{OrderID: "o-1"}).Error
		})
		stillWaiting := inside.Load()
		if err != nil {
			t.Fatalf("the application's transaction failed while %d consumers waited: %v", stillWaiting, err)
		}
		if stillWaiting == 0 {
			t.Fatal("no consumer was waiting when the application's transaction returned: the test proved nothing")
		}
		releaseAll()
		eventually(t, func() bool { return e.pending(t) == 0 }, "every message completed once released")
		if got := e.count(t, &Order{}); got != 1 {
			t.Fatalf("%d orders, want 1", got)
		}
	})
}
