package asyncmonolith_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

// Adversarial tests of the lease runtime (issue 12's review). Each names the defect it
// pins down; see the review report.

// ProcessBatch claims a whole batch for one lease but runs only ConsumerConcurrency of it
// at a time: a message that waits for a slot can outlive its lease before it even starts,
// and another instance then claims it and runs it too.
func TestReviewProcessBatchLeaseCoversMessagesWaitingForASlot(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		cfg := am.Config{ConsumerConcurrency: 1, ProcessorBatchSize: 4, ConsumerTimeout: 10 * time.Second,
			AbandonGrace: time.Second, LeaseMargin: time.Second} // lease: 12 s
		e := setup(t, dialect, cfg)
		cfg.Clock = e.clock
		other := instance(t, e.db, dialect, cfg)
		var mu sync.Mutex
		runs := map[int]int{}
		var firstRuns atomic.Int32
		var otherErr error
		consume := func(first bool) am.ConsumerFunc[Job] {
			return func(ctx context.Context, m *am.Message[Job]) error {
				mu.Lock()
				runs[m.Payload.N]++
				mu.Unlock()
				if !first {
					return nil
				}
				// Each run takes 9 s of its 10 s timeout.
				e.clock.Advance(9 * time.Second)
				if firstRuns.Add(1) == 2 {
					// 18 s after the claim: its lease has ended; another instance claims
					// what is due.
					_, otherErr = other.ProcessBatch(context.Background()) // ctx ended with the hour: its deadline passed
				}
				return nil
			}
		}
		if err := am.Register[Job](e.p, consume(true), am.WithName("Slow")); err != nil {
			t.Fatal(err)
		}
		if err := am.Register[Job](other, consume(false), am.WithName("Slow")); err != nil {
			t.Fatal(err)
		}
		if err := e.db.Transaction(func(tx *gorm.DB) error {
			return am.ProduceBatch(tx, []Job{{N: 1}, {N: 2}, {N: 3}, {N: 4}}).Error
		}); err != nil {
			t.Fatal(err)
		}
		for mustBatch(t, e) > 0 {
		}
		if otherErr != nil {
			t.Fatalf("other instance's ProcessBatch: %v", otherErr)
		}
		mu.Lock()
		defer mu.Unlock()
		for n := 1; n <= 4; n++ {
			if runs[n] != 1 {
				t.Errorf("message %d ran %d times, want 1 (runs: %v, counters: %+v)", n, runs[n], runs, e.p.Counters())
			}
		}
	})
}

// A message whose id is in poisoned_messages already (a row written by hand, an old copy)
// cannot be poisoned: the copy violates the primary key, setting it apart poisons it
// again, and the message is left claimed, to run once more every lease, forever.
func TestReviewPoisonWhenItsIDIsPoisonedAlready(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		var ran atomic.Int32
		failing := am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
			ran.Add(1)
			return errors.New("always fails")
		})
		if err := am.Register[Job](e.p, failing, am.WithName("Failer"), am.WithAttempts(1)); err != nil {
			t.Fatal(err)
		}
		now := e.clock.Now().UnixMilli()
		if err := e.db.Create(&am.PoisonedMessage{ID: "dup-1", CreatedAt: now - 1000, AvailableAfter: now - 1000, Attempts: 1,
			ConsumerType: "Failer", PayloadType: "Job", Payload: `{"n":0}`, InsertID: "old", LastError: "old failure", PoisonedAt: now}).Error; err != nil {
			t.Fatal(err)
		}
		yes := true
		if err := e.db.Create(&am.ConsumerMessage{ID: "dup-1", CreatedAt: now, AvailableAfter: now, ConsumerType: "Failer",
			PayloadType: "Job", Payload: `{"n":1}`, InsertID: "dup-1", Pending: &yes}).Error; err != nil {
			t.Fatal(err)
		}
		mustBatch(t, e)
		e.clock.Advance(time.Hour) // far past any lease
		mustBatch(t, e)
		if n := ran.Load(); n != 1 {
			t.Errorf("a message with one attempt ran %d times", n)
		}
		if n := e.count(t, &am.ConsumerMessage{}, "id = ?", "dup-1"); n != 0 {
			var row am.ConsumerMessage
			e.db.First(&row, "id = ?", "dup-1")
			t.Errorf("message still in consumer_messages after its last attempt: attempts=%d pending=%v error=%v",
				row.Attempts, row.Pending, row.LastError)
		}
	})
}

// A twin produced while a message runs stands when the running one fails: the retry must
// neither violate the unique index nor lose either message silently (docs/guarantees.md, Deduplication).
func TestReviewFailedRunBesideANewerTwin(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{AttemptDelay: time.Second})
		var mu sync.Mutex
		var seen []int
		c := am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
			mu.Lock()
			seen = append(seen, m.Payload.N)
			mu.Unlock()
			if m.Payload.N == 1 {
				if err := am.ProduceNow(ctx, e.db, Job{N: 2}, am.InsertID("twin")); err != nil {
					return fmt.Errorf("produce twin: %w", err)
				}
				return errors.New("first fails after its twin was produced")
			}
			return nil
		})
		if err := am.Register[Job](e.p, c, am.WithName("Twin")); err != nil {
			t.Fatal(err)
		}
		if err := am.ProduceNow(context.Background(), e.db, Job{N: 1}, am.InsertID("twin")); err != nil {
			t.Fatal(err)
		}
		mustBatch(t, e)
		var rows []am.ConsumerMessage
		if err := e.db.Where("insert_id = ?", "twin").Find(&rows).Error; err != nil {
			t.Fatal(err)
		}
		if len(rows) != 1 || rows[0].Payload != `{"n":2}` || rows[0].Attempts != 0 {
			t.Fatalf("after the failed run: %d rows for the insert id, want only the newer twin: %+v", len(rows), rows)
		}
		e.clock.Advance(time.Minute)
		mustBatch(t, e)
		if e.pending(t) != 0 {
			t.Fatal("the twin was not consumed")
		}
		mu.Lock()
		defer mu.Unlock()
		if fmt.Sprint(seen) != "[1 2]" {
			t.Fatalf("runs saw payloads %v, want [1 2]", seen)
		}
	})
}

// Rows written by hand: a claim whose process crashed (pending NULL, its lease in the
// past) is claimed again and consumed without an attempt counted, and a row whose pending
// is false must not make a second pending message for its insert id.
func TestReviewRowsWrittenByHand(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		r := &recorder[Job]{}
		if err := am.Register[Job](e.p, r, am.WithName("Hand")); err != nil {
			t.Fatal(err)
		}
		now := e.clock.Now().UnixMilli()
		if err := e.db.Exec("INSERT INTO consumer_messages (id, created_at, available_after, attempts, consumer_type, payload_type, payload, insert_id, pending) VALUES (?, ?, ?, 0, 'Hand', 'Job', ?, ?, NULL)",
			"crashed-1", now-60_000, now-1, `{"n":1}`, "crashed-1").Error; err != nil {
			t.Fatal(err)
		}
		mustBatch(t, e)
		if r.count() != 1 || e.pending(t) != 0 {
			t.Fatalf("a crashed claim: ran %d times, %d rows left; want 1 and 0", r.count(), e.pending(t))
		}
		if err := e.db.Exec("INSERT INTO consumer_messages (id, created_at, available_after, attempts, consumer_type, payload_type, payload, insert_id, pending) VALUES (?, ?, ?, 0, 'Hand', 'Job', ?, ?, ?)",
			"false-1", now, now+60_000, `{"n":2}`, "hand-id", false).Error; err != nil {
			t.Logf("pending = false is refused: %v", err)
			return
		}
		if err := am.ProduceNow(context.Background(), e.db, Job{N: 3}, am.InsertID("hand-id")); err != nil {
			t.Fatal(err)
		}
		if n := e.count(t, &am.ConsumerMessage{}, "insert_id = ?", "hand-id"); n != 1 {
			t.Errorf("%d messages waiting with insert id hand-id, want 1: a row with pending = false escapes deduplication", n)
		}
	})
}

// ConsumerConcurrency 1 runs one consumer at a time, in due order.
func TestReviewConcurrencyOneRunsOneAtATimeInDueOrder(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{ConsumerConcurrency: 1, ProcessorMinDelay: time.Millisecond})
		var running, most atomic.Int32
		var mu sync.Mutex
		var order []int
		c := am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
			n := running.Add(1)
			defer running.Add(-1)
			for {
				old := most.Load()
				if n <= old || most.CompareAndSwap(old, n) {
					break
				}
			}
			mu.Lock()
			order = append(order, m.Payload.N)
			mu.Unlock()
			return m.Tx.Exec("SELECT 1").Error
		})
		if err := am.Register[Job](e.p, c, am.WithName("One")); err != nil {
			t.Fatal(err)
		}
		const total = 30
		for i := range total {
			if err := am.ProduceNow(context.Background(), e.db, Job{N: i}); err != nil {
				t.Fatal(err)
			}
			e.clock.Advance(time.Millisecond)
		}
		e.start(t)
		eventually(t, func() bool { return e.pending(t) == 0 }, "queue drained")
		mu.Lock()
		defer mu.Unlock()
		if most.Load() != 1 {
			t.Errorf("%d consumers ran at once with ConsumerConcurrency 1", most.Load())
		}
		for i, n := range order {
			if n != i {
				t.Fatalf("run order %v, want due order", order)
			}
		}
	})
}

type reviewEffect struct {
	ID  uint `gorm:"primaryKey"`
	Who string
}

// A run whose lease ended and whose message another instance claimed and completed since
// completes nothing: its Message.Tx write is rolled back, its outcome is ErrLeaseLost
// (AfterConsume, Counters.LeaseLost), and the other run's write stands alone.
func TestReviewStaleCompletionIsRefused(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		var lost atomic.Int32
		cfg := am.Config{Hooks: am.Hooks{AfterConsume: func(_ context.Context, _ am.MessageInfo, r am.Result) {
			if errors.Is(r.Err, am.ErrLeaseLost) {
				lost.Add(1)
			}
		}}}
		e := setup(t, dialect, cfg)
		if err := e.db.AutoMigrate(&reviewEffect{}); err != nil {
			t.Fatal(err)
		}
		other := instance(t, e.db, dialect, am.Config{Clock: e.clock})
		var otherErr error
		stale := am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
			e.clock.Advance(time.Hour)                             // this process was paused far past the lease
			_, otherErr = other.ProcessBatch(context.Background()) // ctx ended with the hour: its deadline passed
			return m.Tx.Create(&reviewEffect{Who: "stale"}).Error
		})
		fresh := am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
			return m.Tx.Create(&reviewEffect{Who: "fresh"}).Error
		})
		if err := am.Register[Job](e.p, stale, am.WithName("Effect")); err != nil {
			t.Fatal(err)
		}
		if err := am.Register[Job](other, fresh, am.WithName("Effect")); err != nil {
			t.Fatal(err)
		}
		if err := am.ProduceNow(context.Background(), e.db, Job{N: 1}); err != nil {
			t.Fatal(err)
		}
		mustBatch(t, e)
		if otherErr != nil {
			t.Fatalf("other instance: %v", otherErr)
		}
		var effects []reviewEffect
		if err := e.db.Find(&effects).Error; err != nil {
			t.Fatal(err)
		}
		if len(effects) != 1 || effects[0].Who != "fresh" {
			t.Fatalf("effects = %+v, want only the fresh run's", effects)
		}
		if e.pending(t) != 0 {
			t.Fatal("message left behind")
		}
		if c := e.p.Counters(); c.LeaseLost != 1 || c.Succeeded != 0 || lost.Load() != 1 {
			t.Fatalf("stale instance: counters %+v, AfterConsume saw ErrLeaseLost %d times; want LeaseLost 1", c, lost.Load())
		}
	})
}
