package asyncmonolith_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Payment is a domain table of the examples.
type Payment struct {
	ID     string `gorm:"primaryKey;size:64"`
	Status string
}

// PaymentFailed is a message payload.
type PaymentFailed struct {
	PaymentID string `json:"payment_id"`
}

// NotifyCustomer consumes PaymentFailed.
type NotifyCustomer struct{}

// Consume handles one message.
func (NotifyCustomer) Consume(ctx context.Context, m *am.Message[PaymentFailed]) error {
	fmt.Printf("notify customer: payment %s failed (attempt %d)\n", m.Payload.PaymentID, m.Attempt)
	return nil
}

// exampleDB opens a fresh SQLite database with the plugin registered and migrated.
func exampleDB() (*gorm.DB, *am.Plugin, func()) {
	return exampleDBWith(am.Config{ProcessorMaxDelay: 50 * time.Millisecond})
}

// exampleDBWith is exampleDB with the plugin's config.
func exampleDBWith(cfg am.Config) (*gorm.DB, *am.Plugin, func()) {
	dir, _ := os.MkdirTemp("", "am-example-")
	dsn := "file:" + filepath.Join(dir, "app.db") + "?_journal_mode=WAL&_busy_timeout=5000&_txlock=immediate"
	db, err := gorm.Open(sqlite.Open(dsn), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		panic(err)
	}
	p := am.New(cfg)
	if err := db.Use(p); err != nil {
		panic(err)
	}
	if err := p.Migrate(context.Background(), db); err != nil {
		panic(err)
	}
	if err := db.AutoMigrate(&Payment{}); err != nil {
		panic(err)
	}
	return db, p, func() {
		if s, err := db.DB(); err == nil {
			s.Close()
		}
		os.RemoveAll(dir)
	}
}

func pendingCount(db *gorm.DB) int64 {
	var n int64
	db.Model(&am.ConsumerMessage{}).Count(&n)
	return n
}

// Register binds a typed consumer to a payload type, with per-consumer limits.
func ExampleRegister() {
	p := am.New(am.Config{})
	err := am.Register[PaymentFailed](p, NotifyCustomer{}, am.WithAttempts(3), am.WithTimeout(5*time.Second))
	fmt.Println(err)
	// A second consumer under the same name is refused.
	err = am.Register[PaymentFailed](p, NotifyCustomer{})
	fmt.Println(err)
	// Output:
	// <nil>
	// asyncmonolith: consumer type already registered: "NotifyCustomer"
}

// Produce inside a transaction: the message commits or rolls back with the domain change.
func ExampleProduce_transaction() {
	db, p, done := exampleDB()
	defer done()
	_ = am.Register[PaymentFailed](p, NotifyCustomer{})

	err := db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(&Payment{ID: "p1", Status: "failed"}).Error; err != nil {
			return err
		}
		return am.Produce(tx, PaymentFailed{PaymentID: "p1"}).Error
	})
	fmt.Println(err, pendingCount(db))
	// Output: <nil> 1
}

// Produce on a session: the message is buffered and written by the next write on the
// returned session, in that write's transaction.
func ExampleProduce_session() {
	db, p, done := exampleDB()
	defer done()
	_ = am.Register[PaymentFailed](p, NotifyCustomer{})

	s := am.Produce(db, PaymentFailed{PaymentID: "p2"})
	fmt.Println("buffered:", am.Pending(s), "written:", pendingCount(db))
	err := s.Create(&Payment{ID: "p2", Status: "failed"}).Error
	fmt.Println(err, "buffered:", am.Pending(s), "written:", pendingCount(db))
	// Output:
	// buffered: 1 written: 0
	// <nil> buffered: 0 written: 1
}

// Delay and At make a message due later.
func ExampleDelay() {
	db, p, done := exampleDB()
	defer done()
	_ = am.Register[PaymentFailed](p, NotifyCustomer{})

	ctx := context.Background()
	_ = am.ProduceNow(ctx, db, PaymentFailed{PaymentID: "p3"}, am.Delay(90*time.Second))
	_ = am.ProduceNow(ctx, db, PaymentFailed{PaymentID: "p4"}, am.At(time.Now().Add(time.Hour)))
	n, _ := p.ProcessBatch(ctx) // nothing is due yet
	fmt.Println("processed:", n, "pending:", pendingCount(db))
	// Output: processed: 0 pending: 2
}

// InsertID deduplicates: one pending message per insert id and consumer.
func ExampleInsertID() {
	db, p, done := exampleDB()
	defer done()
	_ = am.Register[PaymentFailed](p, NotifyCustomer{})

	ctx := context.Background()
	for range 3 {
		_ = am.ProduceNow(ctx, db, PaymentFailed{PaymentID: "p5"}, am.InsertID("payment:p5"))
	}
	fmt.Println("pending:", pendingCount(db))
	_, _ = p.ProcessBatch(ctx)
	// Consumed: the same insert id can be produced again.
	_ = am.ProduceNow(ctx, db, PaymentFailed{PaymentID: "p5"}, am.InsertID("payment:p5"))
	fmt.Println("pending:", pendingCount(db))
	// Output:
	// pending: 1
	// notify customer: payment p5 failed (attempt 1)
	// pending: 1
}

// ProduceBatch writes many payloads in one multi-row insert.
func ExampleProduceBatch() {
	db, p, done := exampleDB()
	defer done()
	_ = am.Register[PaymentFailed](p, NotifyCustomer{})

	batch := []PaymentFailed{{PaymentID: "a"}, {PaymentID: "b"}, {PaymentID: "c"}}
	err := db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, batch).Error })
	fmt.Println(err, pendingCount(db))
	// Output: <nil> 3
}

// Start runs the processors in the background; Stop waits for running consumers.
func ExamplePlugin_Start() {
	db, p, done := exampleDB()
	defer done()
	consumed := make(chan string, 1)
	_ = am.Register[PaymentFailed](p, am.ConsumerFunc[PaymentFailed](func(ctx context.Context, m *am.Message[PaymentFailed]) error {
		consumed <- m.Payload.PaymentID
		return nil
	}), am.WithName("Notifier"))

	if err := p.Start(context.Background()); err != nil {
		panic(err)
	}
	_ = am.Produce(db, PaymentFailed{PaymentID: "p6"}).Create(&Payment{ID: "p6"}).Error
	fmt.Println("consumed", <-consumed)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fmt.Println("stop:", p.Stop(ctx))
	// Output:
	// consumed p6
	// stop: <nil>
}

// Flush writes buffered messages without a domain write.
func ExampleFlush() {
	db, p, done := exampleDB()
	defer done()
	_ = am.Register[PaymentFailed](p, NotifyCustomer{})

	s := am.Produce(db, PaymentFailed{PaymentID: "p7"})
	fmt.Println(am.Flush(context.Background(), s), am.Pending(s), pendingCount(db))
	// Output: <nil> 0 1
}

// A consumer whose dependency is down is paused after BreakerFailures failed runs in a
// row: its other messages are set aside, without using up their attempts, until a probe
// run after the cooldown succeeds. Messages of other consumers are not held up.
func ExampleConfig_breaker() {
	// One consumer at a time, so that exactly BreakerFailures runs fail before the breaker
	// trips (runs already going when it trips finish and count).
	db, p, cleanup := exampleDBWith(am.Config{BreakerFailures: 3, BreakerCooldown: time.Minute, ConsumerConcurrency: 1,
		Logger: slog.New(slog.DiscardHandler)})
	defer cleanup()
	err := am.Register[PaymentFailed](p, am.ConsumerFunc[PaymentFailed](func(ctx context.Context, m *am.Message[PaymentFailed]) error {
		return errors.New("mail server unreachable")
	}))
	if err != nil {
		panic(err)
	}
	failed := make([]PaymentFailed, 10)
	if err := db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, failed).Error }); err != nil {
		panic(err)
	}
	if _, err := p.ProcessBatch(context.Background()); err != nil {
		panic(err)
	}
	c := p.Counters()
	fmt.Printf("runs failed: %d, set aside: %d, poisoned: %d\n", c.Failed, c.SetAside, c.Poisoned)
	// The three failed messages keep their attempt and are set aside with the seven
	// that never ran.
	// Output: runs failed: 3, set aside: 10, poisoned: 0
}

// A processor runs up to ConsumerConcurrency consumers at once; a consumer that waits (an
// HTTP call) holds no database connection while it waits. Here three consumers each wait
// until all three are running.
func ExampleConfig_consumerConcurrency() {
	db, p, cleanup := exampleDBWith(am.Config{ConsumerConcurrency: 3})
	defer cleanup()
	var mu sync.Mutex
	running, most := 0, 0
	all := make(chan struct{})
	err := am.Register[PaymentFailed](p, am.ConsumerFunc[PaymentFailed](func(ctx context.Context, m *am.Message[PaymentFailed]) error {
		mu.Lock()
		running++
		most = max(most, running)
		if running == 3 {
			close(all)
		}
		mu.Unlock()
		select { // stands for a call to another service
		case <-all:
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	}))
	if err != nil {
		panic(err)
	}
	if err := db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, make([]PaymentFailed, 3)).Error }); err != nil {
		panic(err)
	}
	n, err := p.ProcessBatch(context.Background())
	fmt.Println(n, err, "consumers at once:", most)
	// Output: 3 <nil> consumers at once: 3
}

// Counters tell contention (Conflicts) from failure, for monitoring.
func ExamplePlugin_Counters() {
	db, p, cleanup := exampleDB()
	defer cleanup()
	if err := am.Register[PaymentFailed](p, NotifyCustomer{}); err != nil {
		panic(err)
	}
	if err := am.ProduceNow(context.Background(), db, PaymentFailed{PaymentID: "p-1"}); err != nil {
		panic(err)
	}
	if _, err := p.ProcessBatch(context.Background()); err != nil {
		panic(err)
	}
	c := p.Counters()
	fmt.Printf("batches %d, succeeded %d, failed %d, conflicts %d\n", c.Batches, c.Succeeded, c.Failed, c.Conflicts)
	// Output:
	// notify customer: payment p-1 failed (attempt 1)
	// batches 1, succeeded 1, failed 0, conflicts 0
}

// PageMessages reads a listing one page at a time: Next is the cursor of the following
// page, and "" ends it.
func ExamplePlugin_PageMessages() {
	db, p, done := exampleDB()
	defer done()
	_ = am.Register[PaymentFailed](p, NotifyCustomer{})
	for _, id := range []string{"p1", "p2", "p3"} {
		_ = am.ProduceNow(context.Background(), db, PaymentFailed{PaymentID: id})
	}
	cursor := ""
	for {
		page, err := p.PageMessages(context.Background(), am.MessageFilter{ConsumerType: "NotifyCustomer", Limit: 2}, cursor)
		if err != nil {
			panic(err)
		}
		fmt.Println("page of", len(page.Rows))
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	n, _ := p.CountMessages(context.Background(), am.MessageFilter{ConsumerType: "NotifyCustomer"})
	fmt.Println("total", n)
	// Output:
	// page of 2
	// page of 1
	// total 3
}

// PagePoisoned pages poisoned messages, most recently poisoned first; CountPoisoned says
// how many a filter matches (what PurgePoisoned would delete).
func ExamplePlugin_PagePoisoned() {
	db, p, done := exampleDBWith(am.Config{MaxAttempts: 1})
	defer done()
	_ = am.Register[PaymentFailed](p, am.ConsumerFunc[PaymentFailed](func(ctx context.Context, m *am.Message[PaymentFailed]) error {
		return errors.New("card declined")
	}))
	_ = am.ProduceNow(context.Background(), db, PaymentFailed{PaymentID: "p1"}, am.InsertID("payment:p1"))
	_, _ = p.ProcessBatch(context.Background())
	page, _ := p.PagePoisoned(context.Background(), am.MessageFilter{InsertID: "payment:p1"}, "")
	fmt.Println(len(page.Rows), page.Rows[0].LastError, page.Next == "")
	// Output: 1 card declined true
}
