package asyncmonolith_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"gorm.io/gorm"
)

// A consumer that keeps Message.Tx and uses it after its run gets ErrConsumerAbandoned from
// every statement, Row() included: not a bare context.Canceled that names nothing.
func TestReviewMessageTxUsedAfterItsRunFailsWithATypedError(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		kept := make(chan *am.Message[Job], 1)
		c := am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
			var n int
			if err := m.Tx.Raw("SELECT 1").Row().Scan(&n); err != nil || n != 1 {
				return fmt.Errorf("row during the run: %d, %w", n, err)
			}
			kept <- m
			return nil
		})
		if err := am.Register[Job](e.p, c, am.WithName("Keeper")); err != nil {
			t.Fatal(err)
		}
		if err := am.ProduceNow(context.Background(), e.db, Job{N: 1}); err != nil {
			t.Fatal(err)
		}
		mustBatch(t, e)
		if e.pending(t) != 0 {
			t.Fatal("the message was not completed")
		}
		m := <-kept
		if err := m.Tx.Exec("SELECT 1").Error; !errors.Is(err, am.ErrConsumerAbandoned) {
			t.Errorf("Exec after the run: %v, want ErrConsumerAbandoned", err)
		}
		var n int
		if err := m.Tx.Raw("SELECT 1").Row().Scan(&n); !errors.Is(err, am.ErrConsumerAbandoned) {
			t.Errorf("Row().Scan after the run: %v, want ErrConsumerAbandoned", err)
		}
	})
}

type reviewHold struct{ N int }
type reviewWait struct{ N int }

// A consumer that honours its context but whose first Message.Tx statement waits for a
// pooled connection (a pool of one, held by another consumer's Message.Tx) stays blocked
// past its timeout: the begin waits with the transaction's context (timeout + AbandonGrace
// + LeaseMargin), not the statement's, so the consumer cannot return when its context
// ends and is in the end reported as having ignored it.
func TestReviewMessageTxWaitingForAConnectionEndsWithItsContext(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{ConsumerConcurrency: 2, AbandonGrace: time.Minute, LeaseMargin: time.Minute},
			testdb.Options{MaxOpenConns: 1})
		holding, release, waited := make(chan struct{}), make(chan struct{}), make(chan error, 1)
		waiterRuns := make(chan struct{}) // closed once the waiter runs: its timeout's timer is on the clock
		hold := am.ConsumerFunc[reviewHold](func(ctx context.Context, m *am.Message[reviewHold]) error {
			if err := m.Tx.Exec("SELECT 1").Error; err != nil {
				return err
			}
			close(holding)
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		})
		wait := am.ConsumerFunc[reviewWait](func(ctx context.Context, m *am.Message[reviewWait]) error {
			close(waiterRuns)
			<-holding
			err := m.Tx.Exec("SELECT 1").Error // waits for the holder's connection
			waited <- err
			return err
		})
		if err := am.Register[reviewHold](e.p, hold, am.WithName("Holder"), am.WithTimeout(5*time.Minute)); err != nil {
			t.Fatal(err)
		}
		if err := am.Register[reviewWait](e.p, wait, am.WithName("Waiter"), am.WithTimeout(100*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if err := e.db.Transaction(func(tx *gorm.DB) error {
			if err := am.Produce(tx, reviewHold{N: 1}).Error; err != nil {
				return err
			}
			return am.Produce(tx, reviewWait{N: 1}).Error
		}); err != nil {
			t.Fatal(err)
		}
		sqlDB, err := e.db.DB()
		if err != nil {
			t.Fatal(err)
		}
		// The produce above prepares its insert in the background (where the dialect
		// prepares inserts): that prepare must not be the pool wait counted below.
		eventually(t, func() bool { return am.PreparingInserts(e.p) == 0 }, "the produce's insert is prepared")
		waits := sqlDB.Stats().WaitCount
		done := make(chan error, 1)
		go func() { _, err := e.p.ProcessBatch(context.Background()); done <- err }()
		t.Cleanup(func() {
			close(release)
			<-done
		})
		// Once the waiter's begin waits in the pool for the holder's connection, its
		// timeout passes on the clock (the holder's 5 minutes and the transaction's
		// timeout + AbandonGrace + LeaseMargin do not). The waiter must be running first:
		// a clock moved before the waiter's timer exists would never fire it.
		recv(t, holding, "the holder holds the pool's connection")
		recv(t, waiterRuns, "the waiter runs")
		eventually(t, func() bool { return sqlDB.Stats().WaitCount > waits }, "the waiter's begin waits for the pool's connection")
		e.clock.Advance(100 * time.Millisecond)
		got := recv(t, waited, "the waiting consumer's statement returned while the holder kept the connection")
		if !errors.Is(got, context.DeadlineExceeded) {
			t.Errorf("the waiting statement returned %v, want its context's deadline", got)
		}
	})
}

type reviewSlot struct{ Kind string }

// With every Message.Tx slot taken, waiting consumers time out cleanly (their messages
// released, without an attempt), and no path —
// a timeout waiting for a slot, a panic after a write, an abandonment after a write —
// keeps a slot: a later Message.Tx still begins.
func TestReviewMessageTxSlotsAreGivenBack(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{MaxMessageTxs: 1, ConsumerConcurrency: 3, AbandonGrace: 50 * time.Millisecond})
		holding, waitersDone, stuck, stuckIn := make(chan struct{}), make(chan error, 2), make(chan struct{}), make(chan struct{}, 1)
		t.Cleanup(func() { close(stuck) })
		var ok atomic.Int32
		c := am.ConsumerFunc[reviewSlot](func(ctx context.Context, m *am.Message[reviewSlot]) error {
			switch m.Payload.Kind {
			case "hold":
				if err := m.Tx.Exec("SELECT 1").Error; err != nil {
					return err
				}
				close(holding)
				for range 2 {
					if err := <-waitersDone; err == nil {
						return errors.New("a waiter got a Message.Tx beyond MaxMessageTxs")
					}
				}
				return nil
			case "wait":
				<-holding
				err := m.Tx.Exec("SELECT 1").Error
				waitersDone <- err
				return err
			case "panic":
				if err := m.Tx.Exec("SELECT 1").Error; err != nil {
					return err
				}
				panic("after a write")
			case "stuck":
				if err := m.Tx.Exec("SELECT 1").Error; err != nil {
					return err
				}
				stuckIn <- struct{}{}
				<-stuck // ignores its context: abandoned
				return nil
			default:
				if err := m.Tx.Exec("SELECT 1").Error; err != nil {
					return err
				}
				ok.Add(1)
				return nil
			}
		})
		if err := am.Register[reviewSlot](e.p, c, am.WithName("Slots"), am.WithTimeout(200*time.Millisecond), am.WithAttempts(1)); err != nil {
			t.Fatal(err)
		}
		produce := func(kinds ...string) {
			t.Helper()
			if err := e.db.Transaction(func(tx *gorm.DB) error {
				for _, k := range kinds {
					if err := am.Produce(tx, reviewSlot{Kind: k}).Error; err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		// The abandonment comes first: advanceWhenDue finds its AbandonGrace timer as the
		// clock's only one due that soon. After the waiters' round it could find, instead,
		// the AbandonGrace timer of a run of that round whose context ended while it ran:
		// such a timer is set by a goroutine of its own, which nothing here waits for.
		produce("stuck")
		wait := e.batchAsync(t)
		recv(t, stuckIn, "the stuck consumer wrote through Message.Tx")
		e.advanceWhenDue(t, 200*time.Millisecond) // its timeout
		e.advanceWhenDue(t, 50*time.Millisecond)  // AbandonGrace: abandoned, its slot given back
		wait()
		produce("hold", "wait", "wait")
		wait = e.batchAsync(t)
		// Both waiters wait for the holder's slot: the three runs' timeout passes (the
		// waiters give up, and the holder, seeing them fail, returns before AbandonGrace).
		recv(t, holding, "the holder holds the only Message.Tx slot")
		eventually(t, func() bool { return am.TxSlotWaiters(e.p) == 2 }, "two Message.Tx begins wait for the slot")
		e.clock.Advance(200 * time.Millisecond)
		wait()
		produce("panic")
		mustBatch(t, e)
		for range 5 {
			produce("ok")
			mustBatch(t, e)
		}
		if ok.Load() != 5 {
			t.Fatalf("%d of 5 later Message.Tx consumers succeeded (poisoned: %d)", ok.Load(), e.count(t, &am.PoisonedMessage{}))
		}
		// A timeout waiting for a slot is the plugin's backpressure, not the consumer's
		// failure: the two waiters' messages were released without an attempt and ran again
		// in a later batch; the panic and the abandoned run are poisoned.
		if n := e.count(t, &am.PoisonedMessage{}); n != 2 {
			t.Errorf("%d poisoned, want 2 (the panic, the abandoned run)", n)
		}
		if c := e.p.Counters(); c.Released != 2 {
			t.Errorf("released %d, want 2 (the waiters): %+v", c.Released, c)
		}
		if n := e.pending(t); n != 0 {
			t.Errorf("%d messages left, want 0", n)
		}
	})
}
