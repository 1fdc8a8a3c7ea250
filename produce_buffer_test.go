package asyncmonolith_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// TestWritesThatChangeNothingWriteNoMessage: an Update or Delete that matched no row, a
// Create whose ON CONFLICT DO NOTHING skipped its row, and an Exec that affected none
// announce nothing: the messages stay buffered for a later write (or Flush). An Exec that
// changes rows writes them in its transaction, or in one of the plugin's.
func TestWritesThatChangeNothingWriteNoMessage(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{Logger: newTextLogger(discard{})})
		registerBoth(t, e)
		if err := e.db.Create(&Order{ID: "1", Status: "new"}).Error; err != nil {
			t.Fatal(err)
		}
		noops := []struct {
			name  string
			write func(s *gorm.DB) *gorm.DB
		}{
			{"guarded Update", func(s *gorm.DB) *gorm.DB {
				return s.Model(&Order{}).Where("id = ? AND status = ?", "1", "paid").Update("status", "shipped")
			}},
			{"Delete of a missing row", func(s *gorm.DB) *gorm.DB { return s.Delete(&Order{ID: "missing"}) }},
			{"Create ON CONFLICT DO NOTHING", func(s *gorm.DB) *gorm.DB {
				return s.Clauses(clause.OnConflict{DoNothing: true}).Create(&Order{ID: "1", Status: "again"})
			}},
			{"Exec matching nothing", func(s *gorm.DB) *gorm.DB {
				return s.Exec("UPDATE orders SET status = ? WHERE id = ?", "x", "missing")
			}},
		}
		for _, w := range noops {
			s := am.Produce(e.db, OrderCancelled{OrderID: w.name})
			res := w.write(s)
			if res.Error != nil || res.RowsAffected != 0 {
				t.Fatalf("%s: err %v, %d rows", w.name, res.Error, res.RowsAffected)
			}
			if got, n := e.pending(t), am.Pending(s); got != 0 || n != 2 {
				t.Fatalf("%s: %d written, %d buffered; want 0, 2", w.name, got, n)
			}
			if n := am.Discard(s); n != 2 || am.Pending(s) != 0 {
				t.Fatalf("%s: Discard dropped %d, left %d; want 2, 0", w.name, n, am.Pending(s))
			}
			if err := s.Create(&Order{ID: "after discard " + w.name}).Error; err != nil {
				t.Fatal(err)
			}
			if got := e.pending(t); got != 0 {
				t.Fatalf("%s: %d discarded messages written by a later write", w.name, got)
			}
		}

		// An Update that sets the value a row already has: MySQL counts rows changed (none),
		// the others rows matched (one), and the messages follow the count.
		same := am.Produce(e.db, OrderCancelled{OrderID: "same value"})
		res := same.Model(&Order{}).Where("id = ?", "1").Update("status", "new")
		wantRows, wantWritten := int64(1), int64(2)
		if dialect == "mysql" {
			wantRows, wantWritten = 0, 0
		}
		if res.Error != nil || res.RowsAffected != wantRows || e.pending(t) != wantWritten || int64(am.Pending(same)) != 2-wantWritten {
			t.Fatalf("Update to the same value: err %v, %d rows, %d written, %d buffered; want %d rows, %d written",
				res.Error, res.RowsAffected, e.pending(t), am.Pending(same), wantRows, wantWritten)
		}
		if err := e.db.Where("1 = 1").Delete(&am.ConsumerMessage{}).Error; err != nil {
			t.Fatal(err)
		}

		// Exec that changes a row writes the messages with it.
		s := am.Produce(e.db, OrderCancelled{OrderID: "exec"})
		if err := s.Exec("UPDATE orders SET status = ? WHERE id = ?", "paid", "1").Error; err != nil {
			t.Fatal(err)
		}
		if got, n := e.pending(t), am.Pending(s); got != 2 || n != 0 {
			t.Fatalf("Exec that changed a row: %d written, %d buffered; want 2, 0", got, n)
		}
		// A failing Exec writes none of them.
		s = am.Produce(e.db, OrderCancelled{OrderID: "bad exec"})
		if err := s.Exec("UPDATE no_such_table SET x = 1").Error; err == nil {
			t.Fatal("an Exec on a missing table succeeded")
		}
		if got, n := e.pending(t), am.Pending(s); got != 2 || n != 2 {
			t.Fatalf("failed Exec: %d written, %d buffered; want 2, 2", got, n)
		}
		// An Exec whose messages cannot be written is rolled back with them.
		s = am.Produce(e.db, OrderCancelled{OrderID: "exec, flush fails"})
		if err := e.db.Migrator().RenameTable("consumer_messages", "consumer_messages_away"); err != nil {
			t.Fatal(err)
		}
		err := s.Exec("UPDATE orders SET status = ? WHERE id = ?", "lost", "1").Error
		if rerr := e.db.Migrator().RenameTable("consumer_messages_away", "consumer_messages"); rerr != nil {
			t.Fatal(rerr)
		}
		if err == nil {
			t.Fatal("the Exec succeeded although its messages could not be written")
		}
		if got := e.count(t, &Order{}, "status = ?", "lost"); got != 0 {
			t.Fatal("the Exec's change committed without its messages")
		}
		if am.Pending(s) != 2 {
			t.Fatalf("buffered after the failed flush: %d, want 2", am.Pending(s))
		}
		// Inside a transaction begun on the session, Exec writes them there.
		s = am.Produce(e.db, OrderCancelled{OrderID: "exec in tx"})
		if err := s.Transaction(func(tx *gorm.DB) error {
			return tx.Exec("UPDATE orders SET status = ? WHERE id = ?", "shipped", "1").Error
		}); err != nil {
			t.Fatal(err)
		}
		if got, n := e.pending(t), am.Pending(s); got != 4 || n != 0 {
			t.Fatalf("Exec in a transaction: %d written, %d buffered; want 4, 0", got, n)
		}
	})
}

// TestBufferedSessionKeepsGORMWorking: the session a buffered Produce returns (and the
// transactions begun on it) still answer DB, Connection, WithContext and PrepareStmt
// sessions, and a PrepareStmt session opened inside such a transaction still puts the
// messages back when the transaction rolls back.
func TestBufferedSessionKeepsGORMWorking(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{Logger: newTextLogger(discard{})})
		registerBoth(t, e)
		s := am.Produce(e.db, OrderCancelled{OrderID: "1"})
		if sqlDB, err := s.DB(); err != nil || sqlDB == nil {
			t.Fatalf("DB() on a buffered session: %v, %v", sqlDB, err)
		}
		if err := s.Connection(func(c *gorm.DB) error { return c.Exec("SELECT 1").Error }); err != nil {
			t.Fatalf("Connection on a buffered session: %v", err)
		}
		tx := s.Begin()
		if sqlDB, err := tx.DB(); err != nil || sqlDB == nil {
			t.Fatalf("DB() on a transaction of a buffered session: %v, %v", sqlDB, err)
		}
		if err := tx.Session(&gorm.Session{PrepareStmt: true}).WithContext(context.Background()).Create(&Order{ID: "1"}).Error; err != nil {
			t.Fatal(err)
		}
		if am.Pending(s) != 0 {
			t.Fatalf("the PrepareStmt session in the transaction did not flush: %d buffered", am.Pending(s))
		}
		if err := tx.Rollback().Error; err != nil {
			t.Fatal(err)
		}
		if got, n := e.pending(t), am.Pending(s); got != 0 || n != 2 {
			t.Fatalf("after the rollback: %d written, %d buffered; want 0, 2", got, n)
		}
		if err := s.WithContext(context.Background()).Session(&gorm.Session{PrepareStmt: true}).Create(&Order{ID: "1"}).Error; err != nil {
			t.Fatal(err)
		}
		if got := e.pending(t); got != 2 {
			t.Fatalf("after the PrepareStmt Create: %d written, want 2", got)
		}
	})
}

// TestOneBufferRacedByManyTransactions: goroutines share one buffered session, each in a
// transaction of its own begun on it, and half of them roll back. The messages are written
// once, by one transaction that committed, or are still buffered: never twice, never lost.
func TestOneBufferRacedByManyTransactions(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{Logger: newTextLogger(discard{})})
		registerBoth(t, e)
		rollback := errors.New("rollback")
		for round := range 5 {
			s := am.Produce(e.db, OrderCancelled{OrderID: fmt.Sprint("race ", round)})
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					err := s.Transaction(func(tx *gorm.DB) error {
						if err := tx.Create(&Order{ID: fmt.Sprint(round, "-", g)}).Error; err != nil {
							return err
						}
						if g%2 == 1 {
							return rollback
						}
						return nil
					})
					if err != nil && !errors.Is(err, rollback) {
						errs <- err
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatalf("round %d: %v", round, err)
			}
			written := e.count(t, &am.ConsumerMessage{}, "payload LIKE ?", fmt.Sprintf(`%%"race %d"%%`, round))
			if written+int64(am.Pending(s)) != 2 {
				t.Fatalf("round %d: %d written and %d buffered; want 2 in all", round, written, am.Pending(s))
			}
		}
	})
}
