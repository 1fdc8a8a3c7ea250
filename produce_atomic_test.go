package asyncmonolith_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// CheckedOrder is an order the database refuses with status "invalid" (a CHECK
// constraint), so that the INSERT of a Save fails after its UPDATE matched nothing.
type CheckedOrder struct {
	ID     string `gorm:"primaryKey;size:64"`
	Status string `gorm:"size:32;check:chk_checked_orders_status,status <> 'invalid'"`
}

// AuditNote is an optional row written in a nested transaction.
type AuditNote struct {
	ID   uint `gorm:"primaryKey"`
	Note string
}

// TestSaveOfAMissingRowWritesTheMessagesWithTheInsert: GORM's Save with a primary key runs
// an UPDATE in one transaction and, when it matched no row, an INSERT in a second. The
// messages go with the INSERT: when it fails they stay buffered and none is written, and a
// consumer always finds the order its message announces.
func TestSaveOfAMissingRowWritesTheMessagesWithTheInsert(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{Logger: newTextLogger(discard{})})
		registerBoth(t, e)
		if err := e.db.AutoMigrate(&CheckedOrder{}); err != nil {
			t.Fatal(err)
		}
		s := am.Produce(e.db, OrderCancelled{OrderID: "43"})
		if err := s.Save(&CheckedOrder{ID: "43", Status: "invalid"}).Error; err == nil {
			t.Fatal("the CHECK constraint did not refuse the INSERT")
		}
		if got := e.pending(t); got != 0 {
			t.Fatalf("%d messages committed for an order whose INSERT failed (with the UPDATE that matched nothing)", got)
		}
		if am.Pending(s) != 2 {
			t.Fatalf("buffered after the failed Save: %d, want 2", am.Pending(s))
		}
		if err := s.Save(&CheckedOrder{ID: "43", Status: "cancelled"}).Error; err != nil {
			t.Fatal(err)
		}
		if got, n := e.pending(t), am.Pending(s); got != 2 || n != 0 {
			t.Fatalf("after the Save that inserted: %d written, %d buffered; want 2, 0", got, n)
		}
		// Saving the same values again: the UPDATE reports no row changed on MySQL (rows
		// changed, not matched), and Save's upsert then writes the messages.
		if err := am.Produce(e.db, OrderCancelled{OrderID: "43"}).Save(&CheckedOrder{ID: "43", Status: "cancelled"}).Error; err != nil {
			t.Fatal(err)
		}
		if got := e.pending(t); got != 4 {
			t.Fatalf("after a Save of unchanged values: %d messages, want 4", got)
		}
	})
}

// TestSaveMessageNeverRunsBeforeItsOrder: a running processor never sees the message of a
// Save before the order it announces exists.
func TestSaveMessageNeverRunsBeforeItsOrder(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{Logger: newTextLogger(discard{})})
		if err := e.db.AutoMigrate(&Order{}); err != nil {
			t.Fatal(err)
		}
		var (
			mu      sync.Mutex
			missing []string
		)
		rec := &recorder[OrderCancelled]{fn: func(ctx context.Context, m *am.Message[OrderCancelled]) error {
			var n int64
			if err := m.Tx.Model(&Order{}).Where("id = ?", m.Payload.OrderID).Count(&n).Error; err != nil {
				return err
			}
			if n == 0 {
				mu.Lock()
				missing = append(missing, m.Payload.OrderID)
				mu.Unlock()
			}
			return nil
		}}
		if err := am.Register[OrderCancelled](e.p, rec, am.WithName("Lookup")); err != nil {
			t.Fatal(err)
		}
		e.start(t)
		const saves = 40
		for i := range saves {
			id := fmt.Sprint(i)
			if err := am.Produce(e.db, OrderCancelled{OrderID: id}).Save(&Order{ID: id, Status: "cancelled"}).Error; err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, func() bool { return rec.count() == saves }, "every message consumed")
		mu.Lock()
		defer mu.Unlock()
		if len(missing) > 0 {
			t.Fatalf("%d of %d consumers ran before their order existed: %v", len(missing), saves, missing)
		}
	})
}

// TestRollbackAfterAWritePutsTheMessagesBack: messages flushed into a transaction that then
// rolls back (a retried s.Transaction, a savepoint, CreateInBatches failing in a later
// batch, Begin/Rollback) go back to the buffer, for the write that commits.
func TestRollbackAfterAWritePutsTheMessagesBack(t *testing.T) {
	t.Parallel()
	for _, prepared := range []bool{false, true} {
		t.Run(fmt.Sprintf("prepare_stmt=%v", prepared), func(t *testing.T) {
			t.Parallel()
			eachDB(t, func(t *testing.T, dialect string) {
				e := setup(t, dialect, am.Config{}, testdb.Options{Config: &gorm.Config{PrepareStmt: prepared}})
				registerBoth(t, e)
				if err := e.db.AutoMigrate(&AuditNote{}); err != nil {
					t.Fatal(err)
				}
				check := func(what string, written int64, buffered int, s *gorm.DB) {
					t.Helper()
					if got, n := e.pending(t), am.Pending(s); got != written || n != buffered {
						t.Fatalf("%s: %d written, %d buffered; want %d, %d", what, got, n, written, buffered)
					}
				}
				retry := errors.New("conflict, retry")

				// A retry loop around s.Transaction.
				s := am.Produce(e.db, OrderCancelled{OrderID: "r"})
				for attempt := 1; ; attempt++ {
					err := s.Transaction(func(tx *gorm.DB) error {
						if err := tx.Create(&Order{ID: fmt.Sprint("r", attempt)}).Error; err != nil {
							return err
						}
						if attempt == 1 {
							return retry
						}
						return nil
					})
					if attempt == 1 {
						if !errors.Is(err, retry) {
							t.Fatal(err)
						}
						check("after the rolled-back attempt", 0, 2, s)
						continue
					}
					if err != nil {
						t.Fatal(err)
					}
					break
				}
				check("after the committed retry", 2, 0, s)

				// A rolled-back nested transaction (an optional audit row) before the order.
				s = am.Produce(e.db, OrderCancelled{OrderID: "n"})
				err := s.Transaction(func(tx *gorm.DB) error {
					if err := tx.Transaction(func(tx2 *gorm.DB) error {
						if err := tx2.Create(&AuditNote{Note: "optional"}).Error; err != nil {
							return err
						}
						return retry
					}); !errors.Is(err, retry) {
						return fmt.Errorf("nested: %w", err)
					}
					check("inside, after the savepoint rolled back", 2, 2, s)
					return tx.Create(&Order{ID: "n"}).Error
				})
				if err != nil {
					t.Fatal(err)
				}
				check("after the outer transaction committed", 4, 0, s)
				if got := e.count(t, &AuditNote{}); got != 0 {
					t.Fatalf("%d audit rows survived their savepoint", got)
				}

				// A nested transaction that succeeds inside an outer one that rolls back.
				s = am.Produce(e.db, OrderCancelled{OrderID: "o"})
				err = s.Transaction(func(tx *gorm.DB) error {
					if err := tx.Transaction(func(tx2 *gorm.DB) error { return tx2.Create(&Order{ID: "o"}).Error }); err != nil {
						return err
					}
					return retry
				})
				if !errors.Is(err, retry) {
					t.Fatal(err)
				}
				check("after the outer rollback", 4, 2, s)

				// CreateInBatches failing in its second batch (a duplicate key).
				s = am.Produce(e.db, OrderCancelled{OrderID: "b"})
				if err := s.CreateInBatches([]Order{{ID: "b1"}, {ID: "b2"}, {ID: "b1"}}, 2).Error; err == nil {
					t.Fatal("the duplicate order in the second batch was inserted")
				}
				check("after CreateInBatches failed in its second batch", 4, 2, s)
				if got := e.count(t, &Order{}, "id IN ?", []string{"b1", "b2"}); got != 0 {
					t.Fatalf("%d orders of the failed CreateInBatches committed", got)
				}

				// Begin and Rollback, then Begin and Commit.
				s = am.Produce(e.db, OrderCancelled{OrderID: "c"})
				tx := s.Begin()
				if err := tx.Create(&Order{ID: "c"}).Error; err != nil {
					t.Fatal(err)
				}
				if err := tx.Rollback().Error; err != nil {
					t.Fatal(err)
				}
				check("after Rollback", 4, 2, s)
				tx = s.Begin()
				if err := tx.Create(&Order{ID: "c"}).Error; err != nil {
					t.Fatal(err)
				}
				if err := tx.Commit().Error; err != nil {
					t.Fatal(err)
				}
				check("after Commit", 6, 0, s)

				// Flush inside a transaction begun on the session: back on rollback.
				s = am.Produce(e.db, OrderCancelled{OrderID: "f"})
				err = s.Transaction(func(tx *gorm.DB) error {
					if err := am.Flush(context.Background(), tx); err != nil {
						return err
					}
					return retry
				})
				if !errors.Is(err, retry) {
					t.Fatal(err)
				}
				check("after a Flush whose transaction rolled back", 6, 2, s)
			})
		})
	}
}

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
