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

type Job struct {
	N int `json:"n"`
}

// Flaky fails while fail returns true.
type Flaky struct{ *recorder[Job] }

func TestRetryThenPoisonWithPerConsumerLimit(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{AttemptDelay: 30 * time.Second})
		r := &recorder[Job]{fn: func(ctx context.Context, m *am.Message[Job]) error {
			return fmt.Errorf("attempt %d failed", m.Attempt)
		}}
		if err := am.Register[Job](e.p, Flaky{r}, am.WithAttempts(3)); err != nil {
			t.Fatal(err)
		}
		if err := am.ProduceNow(context.Background(), e.db, Job{N: 1}, am.InsertID("job-1")); err != nil {
			t.Fatal(err)
		}
		var original am.ConsumerMessage
		e.db.First(&original)

		mustBatch(t, e)
		var row am.ConsumerMessage
		if err := e.db.First(&row).Error; err != nil {
			t.Fatal(err)
		}
		wantDue := e.clock.Now().Add(30 * time.Second).UnixMilli()
		if row.Attempts != 1 || row.AvailableAfter != wantDue || row.LastError == nil || *row.LastError != "attempt 1 failed" {
			t.Fatalf("after one failure: attempts=%d due=%d (want 1, %d) error=%v", row.Attempts, row.AvailableAfter, wantDue, row.LastError)
		}
		mustBatch(t, e) // not due yet
		if r.count() != 1 {
			t.Fatalf("ran %d times before the retry was due", r.count())
		}
		e.clock.Advance(30 * time.Second)
		mustBatch(t, e)
		e.clock.Advance(30 * time.Second)
		mustBatch(t, e)
		if r.count() != 3 {
			t.Fatalf("ran %d times, want 3 (WithAttempts(3))", r.count())
		}
		if e.pending(t) != 0 {
			t.Fatal("message still pending after its last attempt")
		}
		var p am.PoisonedMessage
		if err := e.db.First(&p).Error; err != nil {
			t.Fatal(err)
		}
		if p.ID != original.ID || p.CreatedAt != original.CreatedAt || p.Payload != original.Payload ||
			p.InsertID != "job-1" || p.Attempts != 3 || p.LastError != "attempt 3 failed" || p.ConsumerType != "Flaky" {
			t.Fatalf("poisoned row = %+v", p)
		}
		msgs := r.messages()
		for i, m := range msgs {
			if m.Attempt != i+1 || m.MaxAttempts != 3 || m.IsLastAttempt() != (i == 2) {
				t.Fatalf("run %d: attempt %d of %d", i, m.Attempt, m.MaxAttempts)
			}
		}
	})
}

// Sleeper says it runs (on running), then waits for its context to end, or, when
// ignoreCtx, for release alone (a consumer that ignores its context).
type Sleeper struct {
	ignoreCtx bool
	running   chan<- struct{}
	release   <-chan struct{}
}

func (s Sleeper) Consume(ctx context.Context, m *am.Message[Job]) error {
	s.running <- struct{}{}
	if s.ignoreCtx {
		<-s.release
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

func TestTimeoutCooperativeAndAbandoned(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		for _, ignore := range []bool{false, true} {
			const timeout, grace = 100 * time.Millisecond, 50 * time.Millisecond
			e := setup(t, dialect, am.Config{MaxAttempts: 1, AbandonGrace: grace})
			running, release := make(chan struct{}, 1), make(chan struct{})
			t.Cleanup(func() { close(release) })
			if err := am.Register[Job](e.p, Sleeper{ignoreCtx: ignore, running: running, release: release}, am.WithTimeout(timeout)); err != nil {
				t.Fatal(err)
			}
			if err := am.ProduceNow(context.Background(), e.db, Job{}); err != nil {
				t.Fatal(err)
			}
			wait := e.batchAsync(t)
			recv(t, running, "the consumer runs")
			e.advanceWhenDue(t, timeout) // its timeout: a cooperative consumer returns
			if ignore {
				// The consumer never returns until the test ends: the batch ends only if
				// the processor abandons it AbandonGrace after its timeout.
				e.advanceWhenDue(t, grace)
			}
			wait()
			var p am.PoisonedMessage
			if err := e.db.First(&p).Error; err != nil {
				t.Fatalf("ignoreCtx=%v: no poisoned message: %v", ignore, err)
			}
			if !strings.Contains(p.LastError, "timed out") {
				t.Fatalf("ignoreCtx=%v: error = %q", ignore, p.LastError)
			}
			if abandoned := strings.Contains(p.LastError, "abandoned"); abandoned != ignore {
				t.Fatalf("ignoreCtx=%v: error = %q (abandoned: %v)", ignore, p.LastError, abandoned)
			}
		}
	})
}

func TestPanicUndecodableAndUnknownConsumer(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{MaxAttempts: 1})
		ok := &recorder[Job]{}
		if err := am.Register[Job](e.p, ConsumerNamed{ok, "Healthy"}); err != nil {
			t.Fatal(err)
		}
		if err := am.Register[OrderCancelled](e.p, am.ConsumerFunc[OrderCancelled](func(ctx context.Context, m *am.Message[OrderCancelled]) error {
			panic("kaboom")
		}), am.WithName("Panicker")); err != nil {
			t.Fatal(err)
		}
		now := e.clock.Now().UnixMilli()
		rows := []am.ConsumerMessage{
			{ID: "bad-json", CreatedAt: now, AvailableAfter: now, ConsumerType: "Healthy", PayloadType: "Job", Payload: `{"n":`, InsertID: "1"},
			{ID: "wrong-shape", CreatedAt: now, AvailableAfter: now, ConsumerType: "Healthy", PayloadType: "Job", Payload: `{"n":"text"}`, InsertID: "2"},
			{ID: "unknown", CreatedAt: now, AvailableAfter: now, ConsumerType: "Gone", PayloadType: "Job", Payload: `{}`, InsertID: "3"},
			{ID: "good", CreatedAt: now, AvailableAfter: now, ConsumerType: "Healthy", PayloadType: "Job", Payload: `{"n":7}`, InsertID: "4"},
		}
		if err := e.db.Create(&rows).Error; err != nil {
			t.Fatal(err)
		}
		if err := am.ProduceNow(context.Background(), e.db, OrderCancelled{OrderID: "p"}); err != nil {
			t.Fatal(err)
		}
		mustBatch(t, e)
		if ok.count() != 1 || ok.messages()[0].Payload.N != 7 {
			t.Fatalf("healthy message: %d runs", ok.count())
		}
		var poisoned []am.PoisonedMessage
		e.db.Order("id").Find(&poisoned)
		got := map[string]string{}
		for _, p := range poisoned {
			got[p.ID] = p.LastError
		}
		if len(poisoned) != 4 {
			t.Fatalf("poisoned = %v, want 4 rows", got)
		}
		for id, want := range map[string]string{"bad-json": "does not decode", "wrong-shape": "does not decode", "unknown": "unknown consumer type"} {
			if !strings.Contains(got[id], want) {
				t.Errorf("%s: error %q does not contain %q", id, got[id], want)
			}
		}
		var panicked string
		for id, msg := range got {
			if strings.Contains(msg, "kaboom") {
				panicked = id
			}
		}
		if panicked == "" {
			t.Errorf("no poisoned row for the panicking consumer: %v", got)
		}
		if e.pending(t) != 0 {
			t.Fatal("messages left pending")
		}
	})
}

type ConsumerNamed struct {
	*recorder[Job]
	name string
}

func (c ConsumerNamed) ConsumerType() string { return c.name }

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

func TestRegisterErrors(t *testing.T) {
	t.Parallel()
	p := am.New(am.Config{})
	if err := am.Register[Job](p, Flaky{&recorder[Job]{}}); err != nil {
		t.Fatal(err)
	}
	if err := am.Register[OrderCancelled](p, am.ConsumerFunc[OrderCancelled](nil), am.WithName("Flaky")); !errors.Is(err, am.ErrDuplicateConsumer) {
		t.Fatalf("duplicate consumer: %v", err)
	}
	if err := am.Register[Job](p, Flaky{}, am.WithName(strings.Repeat("n", 256))); !errors.Is(err, am.ErrInvalidName) {
		t.Fatalf("long name: %v", err)
	}
	if err := am.Register[Job](p, Flaky{}, am.WithName("Other"), am.WithAttempts(-1)); !errors.Is(err, am.ErrInvalidOption) {
		t.Fatalf("negative attempts: %v", err)
	}
	if err := am.Register[Job](p, Flaky{}, am.WithName("Other"), am.WithTimeout(2*time.Hour)); !errors.Is(err, am.ErrInvalidOption) {
		t.Fatalf("timeout over 1h: %v", err)
	}
	if err := am.Register[struct{ A int }](p, am.ConsumerFunc[struct{ A int }](nil), am.WithName("Anon")); !errors.Is(err, am.ErrInvalidName) {
		t.Fatalf("anonymous payload type: %v", err)
	}
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
