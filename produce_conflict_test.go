package asyncmonolith_test

import (
	"context"
	"errors"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// TestProduceNowInACallersTransactionReturnsADeadlock: ProduceNow given the caller's
// transaction never retries inside it. A real deadlock is provoked: the caller's
// transaction T1 locks an order, a heavier transaction T2 holds an uncommitted message
// with the insert id T1 then produces, and T2 asks for T1's order. The database aborts
// T1 (on MariaDB InnoDB has then rolled back all of T1, and a retry would run in
// autocommit: half of T1 would commit). ProduceNow must return the conflict as
// ErrRetryable, and nothing of T1 may commit.
func TestProduceNowInACallersTransactionReturnsADeadlock(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		if dialect == "sqlite" {
			t.Skip("SQLite has one writer at a time: no deadlock between two transactions")
		}
		ctx := context.Background()
		e := setup(t, dialect, am.Config{Logger: newTextLogger(discard{})})
		registerBoth(t, e)
		if err := e.db.Create(&Order{ID: "x", Status: "new"}).Error; err != nil {
			t.Fatal(err)
		}

		t2 := e.db.Begin()
		defer t2.Rollback()
		if dialect == "postgres" {
			// T1, which waits first, must be the one whose deadlock check runs.
			if err := t2.Exec("SET LOCAL deadlock_timeout = '60s'").Error; err != nil {
				t.Fatal(err)
			}
		}
		// T2 holds the message with insert id "k" and enough other rows that InnoDB
		// chooses the lighter T1 as its victim.
		if err := am.ProduceBatch(t2, make([]OrderCancelled, 50)).Error; err != nil {
			t.Fatal(err)
		}
		if err := am.ProduceTx(t2, OrderCancelled{OrderID: "t2"}, am.InsertID("k")); err != nil {
			t.Fatal(err)
		}

		t1 := e.db.Begin()
		defer t1.Rollback()
		if err := t1.Create(&Order{ID: "t1-before"}).Error; err != nil {
			t.Fatal(err)
		}
		var locked Order
		if err := t1.Clauses(clause.Locking{Strength: "UPDATE"}).First(&locked, "id = ?", "x").Error; err != nil {
			t.Fatal(err)
		}
		waiting := lockWaitProbe(t, e, t1, dialect)

		produced := make(chan error, 1)
		go func() { produced <- am.ProduceNow(ctx, t1, OrderCancelled{OrderID: "t1"}, am.InsertID("k")) }()
		eventually(t, waiting, "T1's insert waits for T2's message")
		t2Locked := make(chan error, 1)
		go func() {
			var o Order
			t2Locked <- t2.Clauses(clause.Locking{Strength: "UPDATE"}).First(&o, "id = ?", "x").Error
		}()

		var err error
		t2Done := false
		select {
		case err = <-produced:
		case lerr := <-t2Locked:
			// MariaDB rolled T1 back and gave its lock to T2. Ending T2 lets a ProduceNow
			// that retries in the dead transaction finish, as it does in autocommit.
			if lerr != nil {
				t.Fatalf("T2 was chosen as the deadlock victim (%v): the test needs T1 to be", lerr)
			}
			t2Done = true
			t2.Rollback()
			err = <-produced
		}
		if !errors.Is(err, am.ErrRetryable) {
			t.Fatalf("ProduceNow in the deadlocked caller's transaction: err = %v, want ErrRetryable", err)
		}
		// The caller does what ErrRetryable asks: roll back, and retry the whole transaction.
		t1.Rollback()
		if !t2Done {
			if err := <-t2Locked; err != nil {
				t.Fatalf("T2's lock after T1 rolled back: %v", err)
			}
		}
		t2.Rollback()
		if got := e.count(t, &Order{}, "id = ?", "t1-before"); got != 0 {
			t.Fatal("T1's order committed although its transaction deadlocked")
		}
		if got := e.count(t, &am.ConsumerMessage{}, "insert_id = ?", "k"); got != 0 {
			t.Fatalf("%d messages of the deadlocked transactions committed", got)
		}
		// The retried transaction commits both.
		err = e.db.Transaction(func(tx *gorm.DB) error {
			if err := tx.Create(&Order{ID: "t1-before"}).Error; err != nil {
				return err
			}
			return am.ProduceNow(ctx, tx, OrderCancelled{OrderID: "t1"}, am.InsertID("k"))
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := e.count(t, &am.ConsumerMessage{}, "insert_id = ?", "k"); got != 2 {
			t.Fatalf("after the retry: %d messages, want 2", got)
		}
	})
}

// lockWaitProbe returns a condition that holds while tx's connection waits for a row lock.
func lockWaitProbe(t *testing.T, e *env, tx *gorm.DB, dialect string) func() bool {
	t.Helper()
	var id int64
	switch dialect {
	case "postgres":
		if err := tx.Raw("SELECT pg_backend_pid()").Scan(&id).Error; err != nil {
			t.Fatal(err)
		}
		return func() bool {
			var n int64
			e.db.Raw("SELECT COUNT(*) FROM pg_stat_activity WHERE pid = ? AND wait_event_type = 'Lock'", id).Scan(&n)
			return n == 1
		}
	default:
		if err := tx.Raw("SELECT CONNECTION_ID()").Scan(&id).Error; err != nil {
			t.Fatal(err)
		}
		return func() bool {
			var n int64
			e.db.Raw("SELECT COUNT(*) FROM information_schema.innodb_trx WHERE trx_mysql_thread_id = ? AND trx_state = 'LOCK WAIT'", id).Scan(&n)
			return n == 1
		}
	}
}
