package asyncmonolith_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

// PageView is a row the application writes; AggregateViews counts them later.
type PageView struct {
	ID   uint `gorm:"primaryKey"`
	Page string
}

// AggregateViews asks for a page's views to be counted (deduplicated per page).
type AggregateViews struct {
	Page string `json:"page"`
}

// TestDedupProducedWhileTwinRunsIsKept: one pending message per insert id, and a running
// message is no longer pending. The aggregation of a page's views is produced with each
// view, deduplicated by page; when a second view comes while the first aggregation runs
// (it has already read the views), its message must be kept, or the second view is never
// counted.
func TestDedupProducedWhileTwinRunsIsKept(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, quiet(am.Config{}))
		if err := e.db.AutoMigrate(&PageView{}); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var counted []int64
		runningID := make(chan string, 1)
		release := make(chan struct{})
		if err := am.Register[AggregateViews](e.p, am.ConsumerFunc[AggregateViews](func(ctx context.Context, m *am.Message[AggregateViews]) error {
			var n int64
			// Read outside Message.Tx: the consumer then waits holding nothing.
			if err := e.db.WithContext(ctx).Model(&PageView{}).Where("page = ?", m.Payload.Page).Count(&n).Error; err != nil {
				return err
			}
			mu.Lock()
			counted = append(counted, n)
			first := len(counted) == 1
			mu.Unlock()
			if first {
				runningID <- m.ID
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		}), am.WithName("Aggregator")); err != nil {
			t.Fatal(err)
		}
		view := func(ctx context.Context) error {
			return e.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
				if err := tx.Create(&PageView{Page: "home"}).Error; err != nil {
					return err
				}
				return am.Produce(tx, AggregateViews{Page: "home"}, am.InsertID("views:home")).Error
			})
		}
		if err := view(context.Background()); err != nil {
			t.Fatal(err)
		}
		batch := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := e.p.ProcessBatch(ctx)
			batch <- err
		}()
		released := false
		defer func() {
			if !released {
				close(release)
			}
		}()
		var first string
		select {
		case first = <-runningID:
		case err := <-batch:
			t.Fatalf("the batch ended (%v) before the aggregation ran", err)
		}

		// The second view, while the first aggregation waits; bounded, so that a produce
		// that waits for the running message fails the test instead of hanging it.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := view(ctx); err != nil {
			t.Fatalf("second view while its aggregation runs: %v", err)
		}
		if got := e.count(t, &am.ConsumerMessage{}, "insert_id = ? AND id <> ?", "views:home", first); got != 1 {
			t.Fatalf("%d messages for views:home besides the running one, want 1: the second view's aggregation was dropped", got)
		}
		released = true
		close(release)
		if err := <-batch; err != nil {
			t.Fatalf("first batch: %v", err)
		}
		if n := mustBatch(t, e); n != 1 {
			t.Fatalf("second batch ran %d messages, want 1 (the second aggregation)", n)
		}
		mu.Lock()
		defer mu.Unlock()
		if fmt.Sprint(counted) != "[1 2]" {
			t.Fatalf("the aggregations counted %v views, want [1 2]", counted)
		}
		if e.pending(t) != 0 {
			t.Fatalf("%d messages pending", e.pending(t))
		}
	})
}

// Poll is a consumer's payload that re-arms itself until its condition holds.
type Poll struct {
	Round int `json:"round"`
}

// TestConsumerReArmsItselfWithItsInsertID: a consumer that produces its own insert id
// through Message.Tx (polling until a condition holds) leaves a new pending message once
// its run completes, and that message runs next time.
func TestConsumerReArmsItselfWithItsInsertID(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, quiet(am.Config{}))
		var mu sync.Mutex
		var rounds []int
		if err := am.Register[Poll](e.p, am.ConsumerFunc[Poll](func(ctx context.Context, m *am.Message[Poll]) error {
			mu.Lock()
			rounds = append(rounds, m.Payload.Round)
			mu.Unlock()
			if m.Payload.Round < 3 {
				return am.Produce(m.Tx, Poll{Round: m.Payload.Round + 1}, am.InsertID(m.InsertID), am.Delay(time.Second)).Error
			}
			return nil
		}), am.WithName("Poller")); err != nil {
			t.Fatal(err)
		}
		if err := am.ProduceNow(context.Background(), e.db, Poll{Round: 1}, am.InsertID("poll:1")); err != nil {
			t.Fatal(err)
		}
		var previous am.ConsumerMessage
		if err := e.db.First(&previous).Error; err != nil {
			t.Fatal(err)
		}
		for round := 1; round <= 3; round++ {
			if n := mustBatch(t, e); n != 1 {
				t.Fatalf("round %d: ran %d messages, want 1", round, n)
			}
			var rows []am.ConsumerMessage
			if err := e.db.Where("insert_id = ?", "poll:1").Find(&rows).Error; err != nil {
				t.Fatal(err)
			}
			if round == 3 {
				if len(rows) != 0 {
					t.Fatalf("after the last round %d messages pending, want 0", len(rows))
				}
				break
			}
			if len(rows) != 1 || rows[0].ID == previous.ID || rows[0].Attempts != 0 {
				t.Fatalf("round %d: pending for poll:1 = %+v; want one new message (not %s) with no attempt: the re-armed message was dropped",
					round, rows, previous.ID)
			}
			previous = rows[0]
			e.clock.Advance(time.Second)
		}
		mu.Lock()
		defer mu.Unlock()
		if fmt.Sprint(rounds) != "[1 2 3]" {
			t.Fatalf("rounds run: %v, want [1 2 3]", rounds)
		}
	})
}
