package asyncmonolith_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"gorm.io/gorm"
)

// The operations' reads run in a transaction (so that a resolver keeps them on the
// source). On a pool whose sessions default to SERIALIZABLE (MySQL: plain SELECTs in a
// transaction become locking reads; PostgreSQL: a serializable snapshot) they must still
// read without locks: Stats and ListMessages return at once while a processor's claim
// holds a message's row lock.
func TestAdminReadsTakeNoLocksUnderSerializable(t *testing.T) {
	t.Parallel()
	for _, dialect := range []string{"postgres", "mysql"} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			dsn, _ := testdb.OpenDSN(t, dialect)
			if dialect == "mysql" {
				dsn += "&tx_isolation=%27SERIALIZABLE%27"
			} else {
				dsn += " default_transaction_isolation=serializable"
			}
			e := setupOn(t, openAgain(t, dialect, dsn), quiet(am.Config{}))
			if err := am.Register[Job](e.p, Flaky{&recorder[Job]{}}); err != nil {
				t.Fatal(err)
			}
			if err := am.ProduceNow(context.Background(), e.db, Job{N: 1}); err != nil {
				t.Fatal(err)
			}
			// A claim in progress: the message's row is locked.
			lock := e.db.Begin()
			defer lock.Rollback()
			var ids []string
			if err := lock.Raw("SELECT id FROM consumer_messages FOR UPDATE").Scan(&ids).Error; err != nil || len(ids) != 1 {
				t.Fatalf("lock the row: %v, %d rows", err, len(ids))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			start := time.Now()
			st, err := e.p.Stats(ctx)
			if err != nil {
				t.Fatalf("Stats while a row is locked: %v (after %v)", err, time.Since(start))
			}
			if len(st) != 1 || st[0].Pending != 1 {
				t.Errorf("Stats = %+v, want one pending message", st)
			}
			if rows, err := e.p.ListMessages(ctx, am.MessageFilter{}); err != nil || len(rows) != 1 {
				t.Errorf("ListMessages while a row is locked: %d rows, %v", len(rows), err)
			}
		})
	}
}

// Stats reads its two tables in one snapshot: a message that moves from pending to
// poisoned between the two queries is counted once (before the move), not twice.
func TestStatsIsOneSnapshot(t *testing.T) {
	t.Parallel()
	for _, dialect := range []string{"postgres", "mysql"} { // SQLite reads outside a transaction (source.go)
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			dsn, first := testdb.OpenDSN(t, dialect)
			e := setupOn(t, first, quiet(am.Config{}))
			if err := am.Register[Job](e.p, Flaky{&recorder[Job]{}}); err != nil {
				t.Fatal(err)
			}
			if err := am.ProduceNow(context.Background(), e.db, Job{N: 1}); err != nil {
				t.Fatal(err)
			}
			other := openAgain(t, dialect, dsn) // another instance, moving the message meanwhile
			var armed atomic.Bool
			moved := make(chan error, 1)
			if err := e.db.Callback().Row().After("gorm:row").Register("test:move_between", func(tx *gorm.DB) {
				if tx.Statement.Table != "consumer_messages" || !armed.CompareAndSwap(true, false) {
					return
				}
				moved <- other.Transaction(func(o *gorm.DB) error {
					var m am.ConsumerMessage
					if err := o.Take(&m).Error; err != nil {
						return err
					}
					if err := o.Create(&am.PoisonedMessage{ID: m.ID, CreatedAt: m.CreatedAt, AvailableAfter: m.AvailableAfter,
						ConsumerType: m.ConsumerType, PayloadType: m.PayloadType, Payload: m.Payload, InsertID: m.InsertID,
						LastError: "moved", PoisonedAt: 1}).Error; err != nil {
						return err
					}
					return o.Delete(&m).Error
				})
			}); err != nil {
				t.Fatal(err)
			}
			armed.Store(true)
			st, err := e.p.Stats(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-moved:
				if err != nil {
					t.Fatalf("moving the message between the two reads: %v", err)
				}
			default:
				t.Fatal("the move did not run between Stats' reads")
			}
			if len(st) != 1 {
				t.Fatalf("Stats = %+v, want one consumer", st)
			}
			if n := st[0].Pending + st[0].Poisoned; n != 1 {
				t.Fatalf("Stats = %+v: one message counted %d times", st, n)
			}
		})
	}
}
