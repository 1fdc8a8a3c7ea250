package asyncmonolith_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"gorm.io/gorm"
)

// TestPgBouncerTransactionMode runs the whole flow through PgBouncer in transaction mode
// (scripts/test.sh starts one; AM_PGBOUNCER_DSN): migrate, produce in a transaction,
// consume, retry, poison, requeue, schedules; the listener on Config.ListenDSN (straight to
// the server) hears other instances' commits; and a PollOnly plugin finds them by polling.
func TestPgBouncerTransactionMode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, direct := testdb.PgBouncer(t)

	t.Run("flow", func(t *testing.T) {
		e := setupOn(t, db, am.Config{MaxAttempts: 2, AttemptDelay: time.Minute, DisableBreaker: true,
			ListenDSN: direct, ProcessorMaxDelay: time.Hour, ProcessorMinDelay: time.Millisecond})
		if err := e.db.AutoMigrate(&Order{}); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var ok, failed []string
		if err := am.Register[OrderCancelled](e.p, am.ConsumerFunc[OrderCancelled](func(_ context.Context, m *am.Message[OrderCancelled]) error {
			if m.Attempt == 1 {
				return errors.New("first attempt fails")
			}
			mu.Lock()
			ok = append(ok, m.Payload.OrderID)
			mu.Unlock()
			return m.Tx.Model(&Order{}).Where("id = ?", m.Payload.OrderID).Update("status", "refunded").Error
		}), am.WithName("Refunds")); err != nil {
			t.Fatal(err)
		}
		if err := am.Register[OrderCancelled](e.p, am.ConsumerFunc[OrderCancelled](func(_ context.Context, m *am.Message[OrderCancelled]) error {
			mu.Lock()
			failed = append(failed, m.Payload.OrderID)
			mu.Unlock()
			return errors.New("always fails")
		}), am.WithName("Broken")); err != nil {
			t.Fatal(err)
		}
		for i, id := range []string{"1", "2", "3"} {
			err := e.db.Transaction(func(tx *gorm.DB) error {
				if err := tx.Create(&Order{ID: id, Status: "cancelled"}).Error; err != nil {
					return err
				}
				if err := am.Produce(tx, OrderCancelled{OrderID: id}).Error; err != nil {
					return err
				}
				if i == 2 {
					return errors.New("rolled back") // neither the order nor its messages
				}
				return nil
			})
			if (err != nil) != (i == 2) {
				t.Fatalf("transaction %d: %v", i, err)
			}
		}
		if got := e.pending(t); got != 4 {
			t.Fatalf("%d pending, want 4 (two orders, two consumers)", got)
		}
		mustBatch(t, e) // every first attempt fails
		e.clock.Advance(time.Minute)
		mustBatch(t, e) // Refunds succeeds, Broken is poisoned
		if e.pending(t) != 0 || len(ok) != 2 || len(failed) != 4 {
			t.Fatalf("%d pending, %d successes, %d failures", e.pending(t), len(ok), len(failed))
		}
		if n := e.count(t, &Order{}, "status = ?", "refunded"); n != 2 {
			t.Fatalf("%d orders refunded through Message.Tx, want 2", n)
		}
		poisoned, err := e.p.ListPoisoned(ctx, am.MessageFilter{ConsumerType: "Broken"})
		if err != nil || len(poisoned) != 2 {
			t.Fatalf("poisoned: %d, %v", len(poisoned), err)
		}
		if n, err := e.p.RequeuePoisoned(ctx, []string{poisoned[0].ID}); err != nil || n != 1 {
			t.Fatalf("RequeuePoisoned = %d, %v", n, err)
		}
		if _, err := am.Schedule(t.Context(), e.db, OrderCancelled{OrderID: "1"}, "@every 1h"); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(time.Hour)
		if n, err := e.p.FireSchedules(ctx); err != nil || n != 1 {
			t.Fatalf("FireSchedules = %d, %v", n, err)
		}
		if got := e.pending(t); got != 3 {
			t.Fatalf("%d pending after requeue and schedule, want 3", got)
		}
		if err := e.db.Exec("DELETE FROM consumer_messages").Error; err != nil {
			t.Fatal(err)
		}

		// Started, polling hourly: only the ListenDSN listener can wake the processors for a
		// commit of another instance (also through PgBouncer).
		slow := &recorder[Job]{}
		if err := am.Register[Job](e.p, am.ConsumerFunc[Job](slow.Consume)); err != nil {
			t.Fatal(err)
		}
		producer := instance(t, e.db, "postgres", am.Config{Clock: e.clock})
		if err := am.Register[Job](producer, am.ConsumerFunc[Job](slow.Consume)); err != nil {
			t.Fatal(err)
		}
		if err := am.ProduceNow(ctx, e.db, Job{N: 1}); err != nil {
			t.Fatal(err)
		}
		e.start(t)
		eventually(t, func() bool { return slow.count() == 1 }, "the first poll consumed the warm-up message")
		eventually(t, func() bool { return listeners(t, e.db) == 1 }, "the listener subscribed on the server")
		if err := am.ProduceNow(ctx, producerDB(t, producer), Job{N: 2}); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool { return slow.count() == 2 }, "a commit through PgBouncer woke the processors through the ListenDSN listener")
	})

	t.Run("poll-only", func(t *testing.T) {
		e := &env{db: db, clock: newClock()}
		e.p = instance(t, db, "postgres", am.Config{PollOnly: true, Clock: e.clock})
		r := &recorder[WeeklyReport]{}
		if err := am.Register[WeeklyReport](e.p, am.ConsumerFunc[WeeklyReport](r.Consume)); err != nil {
			t.Fatal(err)
		}
		e.start(t)
		if err := am.ProduceNow(ctx, producerDB(t, e.p), WeeklyReport{Week: "1"}); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool { return r.count() == 1 }, "a poll-only plugin through PgBouncer consumed the message")
	})
}
