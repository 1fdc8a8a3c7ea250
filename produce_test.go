package asyncmonolith_test

import (
	"context"
	"errors"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

type OrderCancelled struct {
	OrderID string `json:"order_id"`
}

type Order struct {
	ID     string `gorm:"primaryKey;size:64"`
	Status string
}

type EmailSender struct{ *recorder[OrderCancelled] }
type Refunder struct{ *recorder[OrderCancelled] }

func registerBoth(t *testing.T, e *env) (*recorder[OrderCancelled], *recorder[OrderCancelled]) {
	t.Helper()
	a, b := &recorder[OrderCancelled]{}, &recorder[OrderCancelled]{}
	if err := am.Register[OrderCancelled](e.p, EmailSender{a}); err != nil {
		t.Fatal(err)
	}
	if err := am.Register[OrderCancelled](e.p, Refunder{b}); err != nil {
		t.Fatal(err)
	}
	if err := e.db.AutoMigrate(&Order{}); err != nil {
		t.Fatal(err)
	}
	return a, b
}

func TestProduceInTransactionCommitsAndRollsBack(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		registerBoth(t, e)
		err := e.db.Transaction(func(tx *gorm.DB) error {
			if err := tx.Create(&Order{ID: "1", Status: "cancelled"}).Error; err != nil {
				return err
			}
			return am.Produce(tx, OrderCancelled{OrderID: "1"}).Error
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := e.pending(t); got != 2 {
			t.Fatalf("after commit: %d messages, want 2 (one per consumer)", got)
		}
		boom := errors.New("boom")
		err = e.db.Transaction(func(tx *gorm.DB) error {
			if err := am.Produce(tx, OrderCancelled{OrderID: "2"}).Error; err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("err = %v", err)
		}
		if got := e.pending(t); got != 2 {
			t.Fatalf("after rollback: %d messages, want 2", got)
		}
	})
}

func TestProduceOnSessionFlushesWithWrite(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		registerBoth(t, e)
		s := am.Produce(e.db, OrderCancelled{OrderID: "1"})
		if am.Pending(s) != 2 {
			t.Fatalf("pending = %d, want 2", am.Pending(s))
		}
		if got := e.pending(t); got != 0 {
			t.Fatalf("written before the write: %d", got)
		}
		if err := s.Create(&Order{ID: "1"}).Error; err != nil {
			t.Fatal(err)
		}
		if got := e.pending(t); got != 2 {
			t.Fatalf("after Create: %d, want 2", got)
		}
		// A failing write keeps the messages buffered and writes nothing.
		s2 := am.Produce(e.db, OrderCancelled{OrderID: "dup"})
		if err := s2.Create(&Order{ID: "1"}).Error; err == nil {
			t.Fatal("duplicate order inserted")
		}
		if got := e.pending(t); got != 2 {
			t.Fatalf("after failed Create: %d, want 2", got)
		}
		if am.Pending(s2) != 2 {
			t.Fatalf("pending after failure = %d, want 2", am.Pending(s2))
		}
		if err := am.Flush(context.Background(), s2); err != nil {
			t.Fatal(err)
		}
		if got := e.pending(t); got != 4 {
			t.Fatalf("after Flush: %d, want 4", got)
		}
	})
}

func TestProcessorConsumes(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		a, b := registerBoth(t, e)
		e.start(t)
		if err := am.Produce(e.db, OrderCancelled{OrderID: "7"}).Create(&Order{ID: "7"}).Error; err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool { return a.count() == 1 && b.count() == 1 && e.pending(t) == 0 }, "both consumers ran and the rows are gone")
		m := a.messages()[0]
		if m.Payload.OrderID != "7" || m.Attempt != 1 {
			t.Fatalf("message = %+v", m)
		}
		if m.InsertID != b.messages()[0].InsertID {
			t.Fatal("fan-out rows do not share an insert id")
		}
	})
}
