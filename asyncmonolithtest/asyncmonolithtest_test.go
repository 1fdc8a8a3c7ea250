package asyncmonolithtest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/asyncmonolithtest"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

type Invoice struct {
	ID     string `gorm:"primaryKey;size:64"`
	Status string
}

type InvoicePaid struct {
	InvoiceID string `json:"invoice_id"`
}

type Reminder struct {
	InvoiceID string `json:"invoice_id"`
}

// MarkPaid writes through Message.Tx and produces a reminder.
type MarkPaid struct{}

func (MarkPaid) Consume(ctx context.Context, m *am.Message[InvoicePaid]) error {
	if m.Payload.InvoiceID == "" {
		return errors.New("no invoice id")
	}
	if err := m.Tx.Create(&Invoice{ID: m.Payload.InvoiceID, Status: "paid"}).Error; err != nil {
		return err
	}
	return am.Produce(m.Tx, Reminder{InvoiceID: m.Payload.InvoiceID}, am.Delay(24*time.Hour)).Error
}

type SendReminder struct{ sent *int }

func (s SendReminder) Consume(ctx context.Context, m *am.Message[Reminder]) error {
	*s.sent++
	return nil
}

func setup(t *testing.T, dialect string) (*gorm.DB, *am.Plugin, *asyncmonolithtest.Clock, *int) {
	t.Helper()
	db := testdb.Open(t, dialect)
	clock := asyncmonolithtest.NewClock(time.Date(2026, 2, 1, 9, 0, 0, 0, time.UTC))
	p := am.New(am.Config{Clock: clock})
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	if err := p.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	if err := db.AutoMigrate(&Invoice{}); err != nil {
		t.Fatal(err)
	}
	sent := new(int)
	if err := am.Register[InvoicePaid](p, MarkPaid{}); err != nil {
		t.Fatal(err)
	}
	if err := am.Register[Reminder](p, SendReminder{sent}); err != nil {
		t.Fatal(err)
	}
	return db, p, clock, sent
}

func TestHelpers(t *testing.T) {
	t.Parallel()
	for _, dialect := range testdb.Dialects {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			db, p, clock, sent := setup(t, dialect)
			ctx := context.Background()
			// Assert inside a transaction that is rolled back afterwards.
			tx := db.Begin()
			if err := am.Produce(tx, InvoicePaid{InvoiceID: "i1"}, am.InsertID("invoice:i1")).Error; err != nil {
				t.Fatal(err)
			}
			got := asyncmonolithtest.RequireProduced[InvoicePaid](t, tx, asyncmonolithtest.Filter{InsertID: "invoice:i1"})
			if len(got) != 1 || got[0].Payload.InvoiceID != "i1" || got[0].ConsumerType != "MarkPaid" || !got[0].Due.Equal(clock.Now()) {
				t.Fatalf("produced = %+v", got)
			}
			tx.Rollback()
			asyncmonolithtest.RequireNotProduced[InvoicePaid](t, db)

			// Run a consumer synchronously: its writes and messages commit on success.
			if err := asyncmonolithtest.Run[InvoicePaid](ctx, db, MarkPaid{}, InvoicePaid{InvoiceID: "i2"}); err != nil {
				t.Fatal(err)
			}
			reminders := asyncmonolithtest.RequireProduced[Reminder](t, db)
			if !reminders[0].Due.Equal(clock.Now().Add(24 * time.Hour)) {
				t.Fatalf("reminder due %v", reminders[0].Due)
			}
			// ...and roll back on failure.
			if err := asyncmonolithtest.Run[InvoicePaid](ctx, db, MarkPaid{}, InvoicePaid{}); err == nil {
				t.Fatal("the failing run returned nil")
			}

			// Drain with the clock: nothing is due until the clock passes the delay.
			if n, err := asyncmonolithtest.Drain(ctx, p); err != nil || n != 0 || *sent != 0 {
				t.Fatalf("drain before the delay: %d %v sent=%d", n, err, *sent)
			}
			clock.Advance(24 * time.Hour)
			if n, err := asyncmonolithtest.Drain(ctx, p); err != nil || n != 1 || *sent != 1 {
				t.Fatalf("drain after the delay: %d %v sent=%d", n, err, *sent)
			}
			asyncmonolithtest.RequireNotProduced[Reminder](t, db)
		})
	}
}

// Example shows a consumer test: produce, drain with a controllable clock, assert.
func Example() {
	dir, _ := os.MkdirTemp("", "amtest-")
	defer os.RemoveAll(dir)
	db, _ := gorm.Open(sqlite.Open("file:"+filepath.Join(dir, "t.db")+"?_journal_mode=WAL&_txlock=immediate"), &gorm.Config{Logger: logger.Discard})
	clock := asyncmonolithtest.NewClock(time.Date(2026, 2, 1, 9, 0, 0, 0, time.UTC))
	p := am.New(am.Config{Clock: clock})
	_ = db.Use(p)
	_ = p.Migrate(context.Background(), db)
	_ = db.AutoMigrate(&Invoice{})
	sent := 0
	_ = am.Register[InvoicePaid](p, MarkPaid{})
	_ = am.Register[Reminder](p, SendReminder{&sent})

	_ = am.ProduceNow(context.Background(), db, InvoicePaid{InvoiceID: "i9"})
	n, _ := asyncmonolithtest.Drain(context.Background(), p)
	reminders, _ := asyncmonolithtest.ListProduced[Reminder](db)
	fmt.Println("ran", n, "reminders pending", len(reminders), "due", reminders[0].Due.Format(time.DateTime))

	clock.Advance(24 * time.Hour)
	n, _ = asyncmonolithtest.Drain(context.Background(), p)
	fmt.Println("ran", n, "sent", sent)
	// Output:
	// ran 1 reminders pending 1 due 2026-02-02 09:00:00
	// ran 1 sent 1
}
