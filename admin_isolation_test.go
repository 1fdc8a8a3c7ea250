package asyncmonolith_test

import (
	"context"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
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
