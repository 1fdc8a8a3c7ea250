package compat_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	amtest "github.com/asyncmonolith/asyncmonolith/asyncmonolithtest"
	"gorm.io/gorm"
)

// The conformance flow every set-up runs: produce on a session and in a transaction,
// consume with Message.Tx reading the domain row, schedule, poison, requeue, stats.

// Order is the application's domain row.
type Order struct {
	ID   string `gorm:"primaryKey;size:64"`
	Note string `gorm:"size:64"`
}

// OrderPlaced announces an Order.
type OrderPlaced struct {
	OrderID string `json:"order_id"`
}

// Reminder is the scheduled payload.
type Reminder struct {
	N int `json:"n"`
}

// Fragile is consumed by a consumer that fails while told to.
type Fragile struct {
	N int `json:"n"`
}

// consumers records what the flow's consumers saw.
type consumers struct {
	mu        sync.Mutex
	notes     map[string]string // order id → the note read through Message.Tx
	reminders int
	fragile   int
	fail      bool
}

type orderReader struct{ c *consumers }

func (r orderReader) Consume(ctx context.Context, m *am.Message[OrderPlaced]) error {
	var o Order
	if err := m.Tx.WithContext(ctx).Where("id = ?", m.Payload.OrderID).Take(&o).Error; err != nil {
		return err
	}
	r.c.mu.Lock()
	r.c.notes[o.ID] = o.Note
	r.c.mu.Unlock()
	return nil
}

type reminderConsumer struct{ c *consumers }

func (r reminderConsumer) Consume(context.Context, *am.Message[Reminder]) error {
	r.c.mu.Lock()
	r.c.reminders++
	r.c.mu.Unlock()
	return nil
}

type fragileConsumer struct{ c *consumers }

func (f fragileConsumer) Consume(context.Context, *am.Message[Fragile]) error {
	f.c.mu.Lock()
	defer f.c.mu.Unlock()
	if f.c.fail {
		return errors.New("downstream unavailable")
	}
	f.c.fragile++
	return nil
}

// Consumer names, as stored.
const (
	readerName   = "OrderReader"
	reminderName = "Reminders"
	fragileName  = "Fragile"
)

// newPlugin returns a plugin on a fake clock with the flow's consumers registered.
func newPlugin(t *testing.T) (*am.Plugin, *consumers, *amtest.Clock) {
	t.Helper()
	c := &consumers{notes: map[string]string{}}
	clk := amtest.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	p := am.New(am.Config{Clock: clk})
	for _, err := range []error{
		am.Register[OrderPlaced](p, orderReader{c}, am.WithName(readerName)),
		am.Register[Reminder](p, reminderConsumer{c}, am.WithName(reminderName)),
		am.Register[Fragile](p, fragileConsumer{c}, am.WithName(fragileName), am.WithAttempts(1)),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return p, c, clk
}

// runFlow runs the conformance flow on db, where p is registered and migrated and the
// orders table exists. Every read it checks must come from the source.
func runFlow(t *testing.T, db *gorm.DB, p *am.Plugin, c *consumers, clk *amtest.Clock) {
	t.Helper()
	ctx := context.Background()

	// Produce on a session (buffered, flushed with the Create) and in a transaction.
	if err := am.Produce(db, OrderPlaced{OrderID: "o1"}).Create(&Order{ID: "o1", Note: "session"}).Error; err != nil {
		t.Fatalf("produce on a session: %v", err)
	}
	err := db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(&Order{ID: "o2", Note: "transaction"}).Error; err != nil {
			return err
		}
		return am.ProduceTx(t.Context(), tx, OrderPlaced{OrderID: "o2"})
	})
	if err != nil {
		t.Fatalf("produce in a transaction: %v", err)
	}
	wantStats(t, p, map[string]am.QueueStats{readerName: {Pending: 2, Due: 2}})
	if msgs, err := p.ListMessages(ctx, am.MessageFilter{}); err != nil || len(msgs) != 2 {
		t.Fatalf("ListMessages = %d messages (%v), want the 2 produced", len(msgs), err)
	}

	// Consume: each consumer reads its order through Message.Tx.
	mustProcess(t, p, 2)
	c.mu.Lock()
	if got := c.notes; len(got) != 2 || got["o1"] != "session" || got["o2"] != "transaction" {
		t.Fatalf("consumers read %v through Message.Tx, want o1:session o2:transaction", got)
	}
	c.mu.Unlock()

	// Schedule: listed, fetched, fired when due, consumed.
	id, err := am.Schedule(ctx, db, Reminder{N: 1}, "@every 1m", am.Tag("compat"))
	if err != nil {
		t.Fatalf("schedule: %v", err)
	}
	if s, err := p.GetSchedule(ctx, id); err != nil || s.ID != id {
		t.Fatalf("GetSchedule(%s) = %+v, %v", id, s, err)
	}
	if err := am.Reschedule(ctx, db, id, "@every 2m"); err != nil {
		t.Fatalf("reschedule: %v", err)
	}
	list, err := p.ListSchedules(ctx, "")
	if err != nil || len(list) != 1 || list[0].ID != id || list[0].ChronExpression != "@every 2m" {
		t.Fatalf("ListSchedules = %+v (%v), want only %s, every 2m", list, err, id)
	}
	clk.Advance(2*time.Minute + time.Second)
	if n, err := p.FireSchedules(ctx); err != nil || n != 1 {
		t.Fatalf("FireSchedules = %d, %v; want 1", n, err)
	}
	mustProcess(t, p, 1)
	if c.reminders != 1 {
		t.Fatalf("reminders consumed = %d, want 1", c.reminders)
	}
	if err := am.DeleteSchedule(ctx, db, id); err != nil {
		t.Fatal(err)
	}

	// Poison, then requeue once the consumer is fixed.
	c.fail = true
	if err := am.ProduceNow(ctx, db, Fragile{N: 1}); err != nil {
		t.Fatalf("ProduceNow: %v", err)
	}
	mustProcess(t, p, 1)
	poisoned, err := p.ListPoisoned(ctx, am.MessageFilter{})
	if err != nil || len(poisoned) != 1 || poisoned[0].ConsumerType != fragileName || poisoned[0].ID == stalePoisoned {
		t.Fatalf("ListPoisoned = %+v (%v), want the one Fragile message", poisoned, err)
	}
	if got, err := p.GetPoisoned(ctx, poisoned[0].ID); err != nil || got.LastError != "downstream unavailable" {
		t.Fatalf("GetPoisoned = %+v, %v", got, err)
	}
	wantStats(t, p, map[string]am.QueueStats{fragileName: {Poisoned: 1}})
	c.mu.Lock()
	c.fail = false
	c.mu.Unlock()
	if n, err := p.RequeuePoisoned(ctx, []string{poisoned[0].ID}); err != nil || n != 1 {
		t.Fatalf("RequeuePoisoned = %d, %v; want 1", n, err)
	}
	wantStats(t, p, map[string]am.QueueStats{fragileName: {Pending: 1, Due: 1}})
	mustProcess(t, p, 1)
	if c.fragile != 1 {
		t.Fatalf("fragile consumed = %d after the requeue, want 1", c.fragile)
	}
	wantStats(t, p, nil)
}

// mustProcess runs one batch and wants it to have claimed n messages.
func mustProcess(t *testing.T, p *am.Plugin, n int) {
	t.Helper()
	if got, err := p.ProcessBatch(context.Background()); err != nil || got != n {
		t.Fatalf("ProcessBatch = %d, %v; want %d", got, err, n)
	}
}

// wantStats wants Stats to list exactly these consumers with these counts (ages aside).
func wantStats(t *testing.T, p *am.Plugin, want map[string]am.QueueStats) {
	t.Helper()
	got, err := p.Stats(context.Background())
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	var names []string
	for _, s := range got {
		names = append(names, s.ConsumerType)
		w, ok := want[s.ConsumerType]
		if !ok || s.Pending != w.Pending || s.Due != w.Due || s.Poisoned != w.Poisoned {
			t.Fatalf("Stats = %+v, want %v", got, want)
		}
	}
	for name := range want {
		if !slices.Contains(names, name) {
			t.Fatalf("Stats = %+v, want %v", got, want)
		}
	}
}
