package asyncmonolith_test

import (
	"context"
	"fmt"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// ReportRequested is a payload whose consumer is slow (it renders a report).
type ReportRequested struct {
	ReportID string `json:"report_id"`
}

// WithRail puts a slow consumer on a rail of its own: its messages are stored on that
// rail and run only by its processors, so a backlog of reports never delays the payment
// notifications of the default rail. On SQLite each rail runs one processor.
func ExampleWithRail() {
	db, p, done := exampleDBWith(am.Config{
		ProcessorMaxDelay: 50 * time.Millisecond,
		Rails:             map[string]am.RailConfig{"reports": {ConsumerConcurrency: 4, ProcessorBatchSize: 4}},
	})
	defer done()
	_ = am.Register[PaymentFailed](p, NotifyCustomer{})
	_ = am.Register[ReportRequested](p, am.ConsumerFunc[ReportRequested](func(ctx context.Context, m *am.Message[ReportRequested]) error {
		return nil // renders the report
	}), am.WithName("RenderReport"), am.WithRail("reports"), am.WithTimeout(10*time.Minute))

	ctx := context.Background()
	_ = am.ProduceNow(ctx, db, ReportRequested{ReportID: "r1"})
	_ = am.ProduceNow(ctx, db, PaymentFailed{PaymentID: "p7"})
	stats, _ := p.StatsByRail(ctx)
	for _, s := range stats {
		fmt.Printf("rail %q: %d pending\n", s.Rail, s.Pending)
	}
	_, _ = p.ProcessBatch(ctx) // each rail in turn; Start runs each rail's processors
	fmt.Println("left:", pendingCount(db))
	// Output:
	// rail "": 1 pending
	// rail "reports": 1 pending
	// notify customer: payment p7 failed (attempt 1)
	// left: 0
}

// WithConcurrency(1) runs a consumer's messages one at a time, in due order, however many
// processors and slots its rail has; other consumers keep running meanwhile.
func ExampleWithConcurrency() {
	db, p, done := exampleDB()
	defer done()
	ran := make(chan string, 3)
	_ = am.Register[PaymentFailed](p, am.ConsumerFunc[PaymentFailed](func(ctx context.Context, m *am.Message[PaymentFailed]) error {
		ran <- m.Payload.PaymentID
		return nil
	}), am.WithName("Ledger"), am.WithConcurrency(1))

	ctx := context.Background()
	now := time.Now()
	_ = am.ProduceNow(ctx, db, PaymentFailed{PaymentID: "second"}, am.At(now.Add(-time.Second)))
	_ = am.ProduceNow(ctx, db, PaymentFailed{PaymentID: "third"}, am.At(now))
	_ = am.ProduceNow(ctx, db, PaymentFailed{PaymentID: "first"}, am.At(now.Add(-2*time.Second)))
	if err := p.Start(ctx); err != nil {
		panic(err)
	}
	for range 3 {
		fmt.Println(<-ran)
	}
	stop, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	fmt.Println("stop:", p.Stop(stop))
	// Output:
	// first
	// second
	// third
	// stop: <nil>
}
