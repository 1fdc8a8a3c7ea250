package asyncmonolith_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

type Audit struct {
	ID  uint `gorm:"primaryKey"`
	Msg string
}

func TestMessageTxCommitsWithCompletionAndRollsBackOnFailure(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{AttemptDelay: time.Minute})
		if err := e.db.AutoMigrate(&Audit{}); err != nil {
			t.Fatal(err)
		}
		followUp := &recorder[OrderCancelled]{}
		if err := am.Register[OrderCancelled](e.p, EmailSender{followUp}); err != nil {
			t.Fatal(err)
		}
		err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
			if err := m.Tx.Create(&Audit{Msg: fmt.Sprintf("job %d attempt %d", m.Payload.N, m.Attempt)}).Error; err != nil {
				return err
			}
			if err := am.Produce(m.Tx, OrderCancelled{OrderID: fmt.Sprint(m.Payload.N)}).Error; err != nil {
				return err
			}
			if m.Payload.N%2 == 1 {
				// A failing statement: on PostgreSQL it would abort the whole batch
				// transaction without the consumer's savepoint.
				if err := m.Tx.Exec("SELECT * FROM no_such_table").Error; err != nil {
					return err
				}
			}
			return nil
		}), am.WithName("Writer"))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.db.Transaction(func(tx *gorm.DB) error {
			return am.ProduceBatch(tx, []Job{{N: 1}, {N: 2}, {N: 3}, {N: 4}}).Error
		}); err != nil {
			t.Fatal(err)
		}
		mustBatch(t, e)
		var audits []string
		e.db.Model(&Audit{}).Order("msg").Pluck("msg", &audits)
		if fmt.Sprint(audits) != "[job 2 attempt 1 job 4 attempt 1]" {
			t.Fatalf("audit rows = %v: failed consumers' writes must roll back, others commit", audits)
		}
		if got := e.count(t, &am.ConsumerMessage{}, "consumer_type = ?", "EmailSender"); got != 2 {
			t.Fatalf("%d messages produced through Message.Tx, want 2 (from the successful runs)", got)
		}
		if got := e.count(t, &am.ConsumerMessage{}, "consumer_type = ? AND attempts = 1", "Writer"); got != 2 {
			t.Fatalf("%d failed messages rescheduled, want 2", got)
		}
	})
}

func TestMessageTxCannotBeCommittedByConsumer(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{MaxAttempts: 1})
		var commitErr atomic.Value
		err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
			err := m.Tx.Commit().Error
			commitErr.Store(fmt.Sprint(err))
			return err
		}), am.WithName("Committer"))
		if err != nil {
			t.Fatal(err)
		}
		if err := am.ProduceNow(context.Background(), e.db, Job{}); err != nil {
			t.Fatal(err)
		}
		mustBatch(t, e)
		if !strings.Contains(fmt.Sprint(commitErr.Load()), am.ErrTxManaged.Error()) {
			t.Fatalf("Commit on Message.Tx: %v", commitErr.Load())
		}
	})
}

// Message.Tx is a full session: chained queries, a nested transaction (a savepoint whose
// rollback keeps the consumer's other writes), the consumer's deadline on its statements,
// and no statement once the run is over.
func TestMessageTxIsAFullSession(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		// The system clock: the deadline checked here is the one network code reads
		// (Context.Deadline, turned into socket deadlines), which only a real clock sets;
		// on a test clock the timeout ends the context without one (see
		// TestClockDrivesMessageTxDeadline).
		e := setup(t, dialect, am.Config{Clock: am.SystemClock()})
		if err := e.db.AutoMigrate(&Audit{}); err != nil {
			t.Fatal(err)
		}
		var kept *gorm.DB
		var problems []string
		err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
			if _, ok := m.Tx.Statement.Context.Deadline(); !ok {
				problems = append(problems, "Message.Tx has no deadline")
			}
			if err := m.Tx.Create(&Audit{Msg: "outer"}).Error; err != nil {
				return err
			}
			inner := m.Tx.Transaction(func(tx *gorm.DB) error {
				if err := tx.Create(&Audit{Msg: "inner"}).Error; err != nil {
					return err
				}
				return errors.New("undo the inner write")
			})
			if inner == nil {
				problems = append(problems, "nested transaction did not report its error")
			}
			var seen []string
			if err := m.Tx.Model(&Audit{}).Where("msg <> ?", "").Order("msg").Pluck("msg", &seen).Error; err != nil {
				return err
			}
			if fmt.Sprint(seen) != "[outer]" {
				problems = append(problems, fmt.Sprintf("inside the run Message.Tx sees %v, want [outer]", seen))
			}
			kept = m.Tx
			return nil
		}), am.WithName("Session"))
		if err != nil {
			t.Fatal(err)
		}
		if err := am.ProduceNow(context.Background(), e.db, Job{N: 1}); err != nil {
			t.Fatal(err)
		}
		mustBatch(t, e)
		if len(problems) > 0 {
			t.Fatal(strings.Join(problems, "; "))
		}
		var audits []string
		e.db.Model(&Audit{}).Order("msg").Pluck("msg", &audits)
		if fmt.Sprint(audits) != "[outer]" {
			t.Fatalf("committed audit rows = %v, want [outer]", audits)
		}
		if err := kept.Create(&Audit{Msg: "late"}).Error; !errors.Is(err, am.ErrConsumerAbandoned) {
			t.Fatalf("a write through Message.Tx after the run: %v, want ErrConsumerAbandoned", err)
		}
	})
}

// TestHeldMessagesSurviveLaterBatches: the library reuses a batch's memory for later
// batches, but never under a consumer that still holds its message (abandoned, or having
// kept m after returning): its fields stay its own, and its Message.Tx keeps refusing work
// instead of reaching a later message's savepoint.
func TestHeldMessagesSurviveLaterBatches(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{MaxAttempts: 1, AbandonGrace: 20 * time.Millisecond, ProcessorBatchSize: 10})
		if err := e.db.AutoMigrate(&Audit{}); err != nil {
			t.Fatal(err)
		}
		release := make(chan struct{})
		stuck := make(chan *am.Message[Job], 1)
		var mu sync.Mutex
		kept := map[int]*am.Message[Job]{}
		err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
			if m.Payload.N == -1 { // ignores its context: abandoned, still running
				stuck <- m
				<-release
				return nil
			}
			mu.Lock()
			kept[m.Payload.N] = m
			mu.Unlock()
			return nil
		}), am.WithTimeout(50*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		if err := am.ProduceNow(context.Background(), e.db, Job{N: -1}); err != nil {
			t.Fatal(err)
		}
		wait := e.batchAsync(t)
		held := recv(t, stuck, "the consumer that ignores its context runs")
		e.advanceWhenDue(t, 50*time.Millisecond) // its timeout
		e.advanceWhenDue(t, 20*time.Millisecond) // AbandonGrace: abandoned, still running
		wait()
		heldID := held.ID
		for round := range 5 {
			jobs := make([]Job, 10)
			for i := range jobs {
				jobs[i].N = round*10 + i
			}
			if err := e.db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, jobs).Error }); err != nil {
				t.Fatal(err)
			}
			if n := mustBatch(t, e); n != 10 {
				t.Fatalf("round %d: batch of %d, want 10", round, n)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if len(kept) != 50 {
			t.Fatalf("%d messages consumed, want 50", len(kept))
		}
		for n, m := range kept {
			if m.Payload.N != n || m.Attempt != 1 {
				t.Fatalf("message %d changed after its run: payload %d, attempt %d", n, m.Payload.N, m.Attempt)
			}
			if err := m.Tx.Create(&Audit{Msg: fmt.Sprint("late ", n)}).Error; !errors.Is(err, am.ErrConsumerAbandoned) {
				t.Fatalf("message %d: a write through its kept Message.Tx: %v, want ErrConsumerAbandoned", n, err)
			}
		}
		if held.ID != heldID || held.Payload.N != -1 {
			t.Fatalf("abandoned message changed under its consumer: %s, %d", held.ID, held.Payload.N)
		}
		if err := held.Tx.Create(&Audit{Msg: "abandoned"}).Error; !errors.Is(err, am.ErrConsumerAbandoned) {
			t.Fatalf("a write through the abandoned run's Message.Tx: %v, want ErrConsumerAbandoned", err)
		}
		close(release)
		var late int64
		e.db.Model(&Audit{}).Count(&late)
		if late != 0 {
			t.Fatalf("%d late writes committed", late)
		}
	})
}
