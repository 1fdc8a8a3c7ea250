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
