package asyncmonolith_test

import (
	"context"
	"errors"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// TestProduceNowInACallersTransactionReturnsADeadlock: ProduceNow and Flush given the
// caller's transaction never retry inside it. A real deadlock is provoked: the caller's
// transaction T1 locks an order, a heavier transaction T2 holds an uncommitted message
// with the insert id T1 then produces, and T2 asks for T1's order. The database aborts
// T1 (on MariaDB InnoDB has then rolled back all of T1, and a retry would run in
// autocommit: half of T1 would commit). The call must return the conflict as
// ErrRetryable, nothing of T1 may commit, and Flush's messages stay buffered.
func TestProduceNowInACallersTransactionReturnsADeadlock(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		if !caps(dialect).RowLocks() {
			t.Skip("one writer at a time (SQLite): no deadlock between two transactions")
		}
		e := setup(t, dialect, am.Config{Logger: newTextLogger(discard{})})
		registerBoth(t, e)
		if err := e.db.Create(&Order{ID: "x", Status: "new"}).Error; err != nil {
			t.Fatal(err)
		}
		for _, call := range []string{"ProduceNow", "Flush"} {
			deadlockCallersTransaction(t, e, dialect, call)
		}
	})
}

func deadlockCallersTransaction(t *testing.T, e *env, dialect, call string) {
	ctx := context.Background()
	key, before := "k-"+call, "t1-"+call
	t2 := e.db.Begin()
	defer t2.Rollback()
	if dialect == "postgres" {
		// T1, which waits first, must be the one whose deadlock check runs.
		if err := t2.Exec("SET LOCAL deadlock_timeout = '60s'").Error; err != nil {
			t.Fatal(err)
		}
	}
	// T2 holds the message with insert id key and enough other rows that InnoDB chooses
	// the lighter T1 as its victim.
	if err := am.ProduceBatch(t2, make([]OrderCancelled, 50)).Error; err != nil {
		t.Fatal(err)
	}
	if err := am.ProduceTx(t.Context(), t2, OrderCancelled{OrderID: "t2"}, am.InsertID(key)); err != nil {
		t.Fatal(err)
	}

	s := am.Produce(e.db, OrderCancelled{OrderID: "t1"}, am.InsertID(key))
	t1 := s.Begin()
	defer t1.Rollback()
	// A write on a NewDB session does not flush s's buffer: Flush below does.
	if err := t1.Session(&gorm.Session{NewDB: true}).Create(&Order{ID: before}).Error; err != nil {
		t.Fatal(err)
	}
	var locked Order
	if err := t1.Clauses(clause.Locking{Strength: "UPDATE"}).First(&locked, "id = ?", "x").Error; err != nil {
		t.Fatal(err)
	}
	waiting := lockWaitProbe(t, e, t1, dialect)

	produced := make(chan error, 1)
	go func() {
		if call == "Flush" {
			produced <- am.Flush(ctx, t1)
			return
		}
		produced <- am.ProduceNow(ctx, t1, OrderCancelled{OrderID: "t1"}, am.InsertID(key))
	}()
	eventually(t, func() bool {
		select {
		case err := <-produced:
			t.Fatalf("%s returned before the deadlock: %v", call, err)
		default:
		}
		return waiting()
	}, call+": T1's insert waits for T2's message")
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
		// MariaDB rolled T1 back and gave its lock to T2. Ending T2 lets a call that
		// retries in the dead transaction finish, as it does in autocommit.
		if lerr != nil {
			t.Fatalf("%s: T2 was chosen as the deadlock victim (%v): the test needs T1 to be", call, lerr)
		}
		t2Done = true
		t2.Rollback()
		err = <-produced
	}
	if !errors.Is(err, am.ErrRetryable) {
		t.Fatalf("%s in the deadlocked caller's transaction: err = %v, want ErrRetryable", call, err)
	}
	// The caller does what ErrRetryable asks: roll back, and retry the whole transaction.
	t1.Rollback()
	if !t2Done {
		if err := <-t2Locked; err != nil {
			t.Fatalf("%s: T2's lock after T1 rolled back: %v", call, err)
		}
	}
	t2.Rollback()
	if got := e.count(t, &Order{}, "id = ?", before); got != 0 {
		t.Fatalf("%s: T1's order committed although its transaction deadlocked", call)
	}
	if got := e.count(t, &am.ConsumerMessage{}, "insert_id = ?", key); got != 0 {
		t.Fatalf("%s: %d messages of the deadlocked transactions committed", call, got)
	}
	if call == "Flush" && am.Pending(s) != 2 {
		t.Fatalf("Flush: %d messages buffered after the deadlock, want 2", am.Pending(s))
	}
	// The retried transaction commits both.
	err = s.Transaction(func(tx *gorm.DB) error {
		if err := tx.Session(&gorm.Session{NewDB: true}).Create(&Order{ID: before}).Error; err != nil {
			return err
		}
		if call == "Flush" {
			return am.Flush(ctx, tx)
		}
		return am.ProduceNow(ctx, tx, OrderCancelled{OrderID: "t1"}, am.InsertID(key))
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.count(t, &am.ConsumerMessage{}, "insert_id = ?", key); got != 2 {
		t.Fatalf("%s: after the retry, %d messages, want 2", call, got)
	}
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
		// information_schema.innodb_trx is a cache that polling keeps from refreshing; the
		// process list is live. An insert of two rows still running there is waiting.
		return func() bool {
			var n int64
			e.db.Raw("SELECT COUNT(*) FROM information_schema.processlist WHERE id = ? AND info LIKE 'INSERT INTO consumer_messages%'", id).Scan(&n)
			return n == 1
		}
	}
}
