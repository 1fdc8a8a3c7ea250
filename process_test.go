package asyncmonolith_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
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
