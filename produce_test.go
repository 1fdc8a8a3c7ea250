package asyncmonolith_test

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"context"
	"errors"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
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
		if m.InsertID == "" || m.InsertID != b.messages()[0].InsertID {
			t.Fatalf("fan-out rows' insert ids %q and %q: want one, not empty", m.InsertID, b.messages()[0].InsertID)
		}
		if err := am.ProduceNow(context.Background(), e.db, OrderCancelled{OrderID: "8"}, am.InsertID("order:8")); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool { return a.count() == 2 && b.count() == 2 }, "both consumers ran again")
		if got := a.messages()[1].InsertID; got != "order:8" {
			t.Fatalf("explicit insert id reached the consumer as %q", got)
		}
	})
}

func TestProduceWithSkipDefaultTransaction(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		for _, global := range []bool{false, true} {
			cfg := &gorm.Config{SkipDefaultTransaction: global}
			e := setup(t, dialect, am.Config{}, testdb.Options{Config: cfg})
			registerBoth(t, e)
			db := e.db
			if !global {
				db = db.Session(&gorm.Session{SkipDefaultTransaction: true})
			}
			if err := am.Produce(db, OrderCancelled{OrderID: "1"}).Create(&Order{ID: "1"}).Error; err != nil {
				t.Fatalf("global=%v: %v", global, err)
			}
			if got := e.pending(t); got != 2 {
				t.Fatalf("global=%v: %d messages, want 2", global, got)
			}
			// When the flush fails, the domain write must roll back too.
			s := am.Produce(db, OrderCancelled{OrderID: "2"})
			// Make the flush fail by dropping the table the messages go to.
			if err := e.db.Migrator().RenameTable("consumer_messages", "consumer_messages_away"); err != nil {
				t.Fatal(err)
			}
			err := s.Create(&Order{ID: "2"}).Error
			if rerr := e.db.Migrator().RenameTable("consumer_messages_away", "consumer_messages"); rerr != nil {
				t.Fatal(rerr)
			}
			if err == nil {
				t.Fatalf("global=%v: write succeeded although the flush failed", global)
			}
			if got := e.count(t, &Order{}, "id = ?", "2"); got != 0 {
				t.Fatalf("global=%v: the order was committed without its messages", global)
			}
			if am.Pending(s) != 2 {
				t.Fatalf("global=%v: messages lost from the buffer after a failed flush: pending %d", global, am.Pending(s))
			}
		}
	})
}

func TestProduceInNestedTransaction(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		registerBoth(t, e)
		inner := errors.New("inner fails")
		err := e.db.Transaction(func(tx *gorm.DB) error {
			if err := am.Produce(tx, OrderCancelled{OrderID: "outer"}).Error; err != nil {
				return err
			}
			if err := tx.Transaction(func(tx2 *gorm.DB) error {
				if err := am.Produce(tx2, OrderCancelled{OrderID: "inner-rolled-back"}).Error; err != nil {
					return err
				}
				return inner
			}); !errors.Is(err, inner) {
				return fmt.Errorf("nested: %v", err)
			}
			return tx.Transaction(func(tx2 *gorm.DB) error {
				return am.Produce(tx2, OrderCancelled{OrderID: "inner-kept"}).Error
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		var payloads []string
		e.db.Model(&am.ConsumerMessage{}).Where("consumer_type = ?", "EmailSender").Order("payload").Pluck("payload", &payloads)
		want := []string{`{"order_id":"inner-kept"}`, `{"order_id":"outer"}`}
		if !reflect.DeepEqual(payloads, want) {
			t.Fatalf("payloads = %v, want %v", payloads, want)
		}
	})
}

func TestProduceOnSessionInsideLaterTransaction(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		registerBoth(t, e)
		boom := errors.New("boom")
		s := am.Produce(e.db, OrderCancelled{OrderID: "1"})
		err := s.Transaction(func(tx *gorm.DB) error {
			if err := tx.Create(&Order{ID: "1"}).Error; err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatal(err)
		}
		if got := e.pending(t); got != 0 {
			t.Fatalf("messages survived the rollback: %d", got)
		}
	})
}

func TestProduceErrors(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		registerBoth(t, e)
		type Unconsumed struct{ X int }
		err := am.Produce(e.db, Unconsumed{}).Create(&Order{ID: "x"}).Error
		if !errors.Is(err, am.ErrNoConsumers) {
			t.Fatalf("unknown payload: err = %v, want ErrNoConsumers", err)
		}
		if got := e.count(t, &Order{}); got != 0 {
			t.Fatal("the write ran although Produce failed")
		}
		bare := testdb.Open(t, dialect)
		if err := am.Produce(bare, OrderCancelled{}).Error; !errors.Is(err, am.ErrNotRegistered) {
			t.Fatalf("before db.Use: err = %v, want ErrNotRegistered", err)
		}
		long := strings.Repeat("x", am.NameMaxLen+1)
		if err := am.Produce(e.db, OrderCancelled{}, am.InsertID(long)).Error; !errors.Is(err, am.ErrInvalidName) {
			t.Fatalf("long insert id: err = %v, want ErrInvalidName", err)
		}
		if err := am.ProduceTx(t.Context(), e.db, OrderCancelled{}); !errors.Is(err, am.ErrTransactionRequired) {
			t.Fatalf("ProduceTx outside a transaction: err = %v", err)
		}
		if err := am.ProduceBatch(e.db, []OrderCancelled{{}, {}}, am.InsertID("a")).Error; !errors.Is(err, am.ErrInvalidOption) {
			t.Fatalf("batch with one insert id: err = %v", err)
		}
		if err := am.Produce(e.db, make(chan int)).Error; err == nil {
			t.Fatal("a channel payload was accepted")
		}
		if got := e.pending(t); got != 0 {
			t.Fatalf("%d messages written by failed calls", got)
		}
	})
}

func TestProduceBatchAndNow(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		registerBoth(t, e)
		batch := make([]OrderCancelled, 250)
		for i := range batch {
			batch[i] = OrderCancelled{OrderID: fmt.Sprint(i)}
		}
		if err := e.db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, batch).Error }); err != nil {
			t.Fatal(err)
		}
		if got := e.pending(t); got != 500 {
			t.Fatalf("%d rows, want 500", got)
		}
		var distinct int64
		e.db.Model(&am.ConsumerMessage{}).Distinct("insert_id").Count(&distinct)
		if distinct != 250 {
			t.Fatalf("%d insert ids, want one per payload (250)", distinct)
		}
		if err := am.ProduceNow(context.Background(), e.db, OrderCancelled{OrderID: "now"}); err != nil {
			t.Fatal(err)
		}
		if got := e.pending(t); got != 502 {
			t.Fatalf("%d rows after ProduceNow, want 502", got)
		}
	})
}

func TestDelayAndAt(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		a, _ := registerBoth(t, e)
		ctx := context.Background()
		if err := am.ProduceNow(ctx, e.db, OrderCancelled{OrderID: "delayed"}, am.Delay(1500*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if err := am.ProduceNow(ctx, e.db, OrderCancelled{OrderID: "at"}, am.At(e.clock.Now().Add(time.Hour))); err != nil {
			t.Fatal(err)
		}
		var due []int64
		e.db.Model(&am.ConsumerMessage{}).Where("consumer_type = ?", "EmailSender").Order("available_after").Pluck("available_after", &due)
		now := e.clock.Now().UnixMilli()
		if len(due) != 2 || due[0] != now+1500 || due[1] != now+3_600_000 {
			t.Fatalf("due = %v, want [%d %d]", due, now+1500, now+3_600_000)
		}
		mustBatch(t, e)
		if a.count() != 0 {
			t.Fatal("a delayed message ran early")
		}
		e.clock.Advance(1499 * time.Millisecond)
		mustBatch(t, e)
		if a.count() != 0 {
			t.Fatal("a delayed message ran 1 ms early")
		}
		e.clock.Advance(time.Millisecond)
		mustBatch(t, e)
		if a.count() != 1 || a.messages()[0].Payload.OrderID != "delayed" {
			t.Fatalf("after the delay: %d runs", a.count())
		}
	})
}

func mustBatch(t *testing.T, e *env) int {
	t.Helper()
	n, err := e.p.ProcessBatch(context.Background())
	if err != nil {
		t.Fatalf("ProcessBatch: %v", err)
	}
	return n
}
