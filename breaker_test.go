package asyncmonolith_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

// Other is a payload of a healthy consumer, beside a failing one.
type Other struct {
	N int `json:"n"`
}

// A consumer whose dependency is down trips its breaker: its backlog is set aside without
// counting attempts (so it is not poisoned), healthy consumers' messages behind it run at
// once, failed probes double the pause, and a successful probe resumes the consumer.
func TestBreakerSetsAsideAFailingConsumer(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		var afterConsume atomic.Int64
		// One run at a time, so that exactly BreakerFailures runs fail before the breaker
		// trips (concurrent runs already started when it trips finish: TestBreakerUnderConcurrentRuns).
		e := setup(t, dialect, am.Config{BreakerFailures: 5, BreakerCooldown: 10 * time.Second, BreakerMaxCooldown: time.Minute,
			AttemptDelay: time.Second, MaxAttempts: 3, ProcessorBatchSize: 100, ConsumerConcurrency: 1,
			Hooks: am.Hooks{AfterConsume: func(context.Context, am.MessageInfo, am.Result) { afterConsume.Add(1) }}})
		var down atomic.Bool
		down.Store(true)
		broken := &recorder[Job]{fn: func(ctx context.Context, m *am.Message[Job]) error {
			if down.Load() {
				return errors.New("payment service unavailable")
			}
			return nil
		}}
		healthy := &recorder[Other]{}
		if err := am.Register[Job](e.p, broken, am.WithName("Broken")); err != nil {
			t.Fatal(err)
		}
		if err := am.Register[Other](e.p, healthy, am.WithName("Healthy")); err != nil {
			t.Fatal(err)
		}
		// 250 failing messages ahead of 20 healthy ones: more than one batch.
		jobs, others := make([]Job, 250), make([]Other, 20)
		if err := e.db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, jobs).Error }); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(time.Millisecond)
		if err := e.db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, others).Error }); err != nil {
			t.Fatal(err)
		}
		t0 := e.clock.Now()
		at := func(d time.Duration) int64 { return t0.Add(d).UnixMilli() }

		mustBatch(t, e) // 5 runs fail and trip the breaker; the rest of the backlog is set aside
		if broken.count() != 5 {
			t.Fatalf("broken consumer ran %d times, want 5 (BreakerFailures)", broken.count())
		}
		// The failed ones keep their attempt count and are set aside with the rest.
		if n := e.count(t, &am.ConsumerMessage{}, "consumer_type = ? AND attempts = 1 AND available_after = ?", "Broken", at(10*time.Second)); n != 5 {
			t.Fatalf("%d failed messages set aside with their attempt counted, want 5", n)
		}
		if n := e.count(t, &am.ConsumerMessage{}, "consumer_type = ? AND attempts = 0 AND available_after = ?", "Broken", at(10*time.Second)); n != 245 {
			t.Fatalf("%d messages set aside for the cooldown without an attempt, want 245", n)
		}
		if got := e.p.Paused(); len(got) != 1 || !got["Broken"].Equal(t0.Add(10*time.Second)) {
			t.Fatalf("Paused() = %v, want Broken until %v", got, t0.Add(10*time.Second))
		}
		mustBatch(t, e) // the healthy messages are next, not behind the failing backlog
		if healthy.count() != 20 || e.count(t, &am.ConsumerMessage{}, "consumer_type = ?", "Healthy") != 0 {
			t.Fatalf("healthy consumer ran %d of 20", healthy.count())
		}

		e.clock.Advance(9 * time.Second) // still paused: nothing runs
		mustBatch(t, e)
		if broken.count() != 5 {
			t.Fatalf("a paused consumer ran (%d runs)", broken.count())
		}

		e.clock.Advance(time.Second) // cooldown over: one probe runs, fails, and pauses twice as long
		mustBatch(t, e)
		if broken.count() != 6 {
			t.Fatalf("after the cooldown the consumer ran %d times, want 6 (one probe)", broken.count())
		}
		if n := e.count(t, &am.ConsumerMessage{}, "consumer_type = ? AND available_after = ?", "Broken", at(30*time.Second)); n != 250 {
			t.Fatalf("%d messages (the failed probe included) set aside for the doubled cooldown, want 250", n)
		}
		if n := e.count(t, &am.PoisonedMessage{}); n != 0 {
			t.Fatalf("%d messages poisoned while their consumer was paused", n)
		}

		down.Store(false) // the dependency is back: the next probe succeeds and the backlog drains
		e.clock.Advance(20 * time.Second)
		for e.pending(t) > 0 {
			if mustBatch(t, e) == 0 {
				t.Fatalf("%d messages pending but none due", e.pending(t))
			}
		}
		if got := e.p.Paused(); len(got) != 0 {
			t.Fatalf("Paused() = %v after a successful probe, want none", got)
		}
		if broken.count() != 256 || e.count(t, &am.PoisonedMessage{}) != 0 {
			t.Fatalf("broken consumer ran %d times (want 256), %d poisoned", broken.count(), e.count(t, &am.PoisonedMessage{}))
		}
		if c := e.p.Counters(); c.Succeeded != 270 || c.Failed != 6 || c.Poisoned != 0 || c.SetAside < 245 || c.Conflicts != 0 {
			t.Fatalf("counters = %+v, want 270 succeeded, 6 failed, 0 poisoned, at least 245 set aside", c)
		}
		if got := afterConsume.Load(); got != int64(broken.count()+healthy.count()) {
			t.Fatalf("AfterConsume called %d times for %d runs: set-aside messages must not be reported", got, broken.count()+healthy.count())
		}
	})
}

// With DisableBreaker, failures use up attempts at full speed.
func TestBreakerDisabled(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{DisableBreaker: true, BreakerFailures: 2, MaxAttempts: 1})
		r := &recorder[Job]{fn: func(context.Context, *am.Message[Job]) error { return errors.New("down") }}
		if err := am.Register[Job](e.p, r); err != nil {
			t.Fatal(err)
		}
		if err := e.db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, make([]Job, 30)).Error }); err != nil {
			t.Fatal(err)
		}
		mustBatch(t, e)
		if r.count() != 30 || e.count(t, &am.PoisonedMessage{}) != 30 {
			t.Fatalf("ran %d, poisoned %d; want 30 and 30", r.count(), e.count(t, &am.PoisonedMessage{}))
		}
	})
}

func TestBreakerUnderConcurrentRuns(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{BreakerFailures: 5, BreakerCooldown: 10 * time.Second, AttemptDelay: time.Second,
			MaxAttempts: 3, ProcessorBatchSize: 100, ConsumerConcurrency: 100})
		broken := &recorder[Job]{fn: func(ctx context.Context, m *am.Message[Job]) error {
			return errors.New("payment service unavailable")
		}}
		if err := am.Register[Job](e.p, broken, am.WithName("Broken")); err != nil {
			t.Fatal(err)
		}
		if err := e.db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, make([]Job, 250)).Error }); err != nil {
			t.Fatal(err)
		}
		t0 := e.clock.Now()
		mustBatch(t, e)
		// Runs that started before the fifth failure tripped the breaker finish and count;
		// every other message is set aside without an attempt.
		ran := int64(broken.count())
		if ran < 5 || ran > 100 {
			t.Fatalf("broken consumer ran %d times, want 5 to 100 (BreakerFailures to one batch)", ran)
		}
		if n := e.count(t, &am.ConsumerMessage{}, "attempts = 1"); n != ran {
			t.Fatalf("%d messages with an attempt counted, want %d (one per run)", n, ran)
		}
		if n := e.count(t, &am.ConsumerMessage{}, "attempts = 0 AND available_after = ?", t0.Add(10*time.Second).UnixMilli()); n != 250-ran {
			t.Fatalf("%d messages set aside without an attempt, want %d", n, 250-ran)
		}
		if e.pending(t) != 250 {
			t.Fatalf("pending %d, want 250", e.pending(t))
		}
	})
}
