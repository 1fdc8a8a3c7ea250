package asyncmonolithtest_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/asyncmonolithtest"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

type Charge struct {
	OrderID string `json:"order_id"`
}

// ExampleClock tests a consumer's timeout without waiting for it: the consumer's timeout
// runs on the Clock, so the test advances the clock past it while the consumer runs.
func ExampleClock() {
	dir, _ := os.MkdirTemp("", "amtest-")
	defer os.RemoveAll(dir)
	db, _ := gorm.Open(sqlite.Open("file:"+filepath.Join(dir, "t.db")+"?_journal_mode=WAL&_txlock=immediate"), &gorm.Config{Logger: logger.Discard})
	clock := asyncmonolithtest.NewClock(time.Date(2026, 2, 1, 9, 0, 0, 0, time.UTC))
	p := am.New(am.Config{Clock: clock, Logger: slog.New(slog.DiscardHandler)})
	_ = db.Use(p)
	_ = p.Migrate(context.Background(), db)

	// A payment provider that never answers: the consumer waits for its context.
	calling := make(chan struct{})
	_ = am.Register[Charge](p, am.ConsumerFunc[Charge](func(ctx context.Context, m *am.Message[Charge]) error {
		close(calling)
		<-ctx.Done()
		return fmt.Errorf("charge %s: %w", m.Payload.OrderID, ctx.Err())
	}), am.WithName("Charge"), am.WithTimeout(30*time.Second), am.WithAttempts(1))
	_ = am.ProduceNow(context.Background(), db, Charge{OrderID: "o-7"})

	done := make(chan int)
	go func() {
		n, _ := p.ProcessBatch(context.Background())
		done <- n
	}()
	<-calling                       // the consumer runs: its timeout is a timer on the clock
	clock.Advance(30 * time.Second) // its timeout passes, at once
	fmt.Println("ran", <-done)

	poisoned, _ := p.ListPoisoned(context.Background(), am.MessageFilter{})
	fmt.Println(poisoned[0].LastError)
	// Output:
	// ran 1
	// asyncmonolith: consumer timed out after 30s: charge o-7: context deadline exceeded
}
