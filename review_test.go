package asyncmonolith_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/asyncmonolithtest"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
)

// Adversarial checks of the session's guarantees (rails, WithConcurrency, retry/snooze,
// Config.Clock), the way a careless or hostile user would use them.

// nilTimerClock is a user Clock whose timers fire (on the test clock) but which returns a
// nil Timer: a careless implementation that forgets to return what it made.
type nilTimerClock struct{ *clock }

func (c nilTimerClock) AfterFunc(d time.Duration, f func()) am.Timer {
	c.clock.AfterFunc(d, f)
	return nil
}

func (c nilTimerClock) NewTimer(time.Duration) am.Timer { return nil }

// ReviewMark is a row a consumer writes through Message.Tx.
type ReviewMark struct {
	ID string `gorm:"primaryKey;size:64"`
}

// A Clock that returns a nil Timer must not crash the process from a worker goroutine: the
// message runs, its Message.Tx commits with its completion.
func TestReviewNilTimerFromUserClock(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{Clock: nilTimerClock{newClock()}})
		if err := e.db.AutoMigrate(&ReviewMark{}); err != nil {
			t.Fatal(err)
		}
		if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
			return m.Tx.Create(&ReviewMark{ID: m.ID}).Error
		}), am.WithName("NilTimer")); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := am.ProduceNow(ctx, e.db, Job{N: 1}); err != nil {
			t.Fatal(err)
		}
		if n, err := e.p.ProcessBatch(ctx); err != nil || n != 1 {
			t.Fatalf("ProcessBatch: %d, %v; want 1 message run", n, err)
		}
		if p, m := e.pending(t), e.count(t, &ReviewMark{}); p != 0 || m != 1 {
			t.Fatalf("%d pending, %d Message.Tx rows; want 0 and 1", p, m)
		}
	})
}

// A typed nil Clock (a nil *asyncmonolithtest.Clock in Config.Clock) is refused at db.Use
// with a *ConfigError naming Clock, not a nil-pointer panic at the first Produce or claim.
func TestReviewTypedNilClockRefused(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		db := testdb.Open(t, dialect)
		var c *asyncmonolithtest.Clock
		err := db.Use(am.New(am.Config{Clock: c}))
		var ce *am.ConfigError
		if !errors.As(err, &ce) || ce.Field != "Clock" {
			t.Fatalf("db.Use with a nil *Clock: %v; want a *ConfigError for Clock", err)
		}
	})
}

// A WithConcurrency(1) consumer whose runs panic, fail, fail permanently, snooze and are
// released (its breaker open) still gets its slot back every time: each ProcessBatch runs
// the next message.
func TestReviewLimitedSlotsComeBackAfterEveryOutcome(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{MaxAttempts: 5, Rails: map[string]am.RailConfig{"one": {}}})
		outcomes := []func() error{
			func() error { panic("boom") },
			func() error { return errors.New("plain failure") },
			func() error { return am.Permanent(errors.New("never")) },
			func() error { return am.SnoozeFor(time.Hour) },
			func() error { return nil },
		}
		var ran []int
		if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
			ran = append(ran, m.Payload.N)
			return outcomes[m.Payload.N]()
		}), am.WithName("OneAtATime"), am.WithConcurrency(1), am.WithRail("one")); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		base := e.clock.Now().Add(-time.Minute)
		for n := range outcomes {
			if err := am.ProduceNow(ctx, e.db, Job{N: n}, am.At(base.Add(time.Duration(n)*time.Second))); err != nil {
				t.Fatal(err)
			}
		}
		for i := range outcomes {
			if n, err := e.p.ProcessBatch(ctx); err != nil || n != 1 {
				t.Fatalf("ProcessBatch %d: %d, %v; want 1 (ran %v so far)", i, n, err, ran)
			}
		}
		if len(ran) != len(outcomes) {
			t.Fatalf("ran %v, want each of the %d messages once", ran, len(outcomes))
		}
	})
}

// A run whose processor was hard-stopped before it began (ProcessBatch with a context
// already done, or a claim that finished after Stop's deadline) does not call its
// consumer: the claim runs to its end, and its messages go back due at once, no attempt
// counted, without a consumer started on a context that is already cancelled.
func TestReviewNoConsumerStartsAfterHardStop(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		var calls atomic.Int64
		if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
			calls.Add(1)
			return nil
		}), am.WithName("AfterStop")); err != nil {
			t.Fatal(err)
		}
		if err := am.ProduceNow(context.Background(), e.db, Job{N: 1}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, _ = e.p.ProcessBatch(ctx)
		if n := calls.Load(); n != 0 {
			t.Fatalf("the consumer ran %d times on a hard-stopped ProcessBatch, want 0", n)
		}
		var m am.ConsumerMessage
		if err := e.db.Take(&m).Error; err != nil {
			t.Fatal(err)
		}
		if m.Attempts != 0 || m.AvailableAfter > e.clock.Now().UnixMilli() {
			t.Fatalf("message after the stopped batch: attempts %d, due %d (now %d); want 0 attempts, due now",
				m.Attempts, m.AvailableAfter, e.clock.Now().UnixMilli())
		}
	})
}

// A snooze whose lease was lost meanwhile (another processor claimed the message: its
// lease replaced this one's) is refused by the fence: the other claim's lease stays, and
// the snooze counts nothing.
func TestReviewSnoozeAfterLostLeaseIsFenced(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		other := e.clock.Now().Add(7 * time.Hour).UnixMilli()
		if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
			// Another processor's claim, as its UPDATE writes it.
			if err := e.db.Exec("UPDATE consumer_messages SET available_after = ? WHERE id = ?", other, m.ID).Error; err != nil {
				return err
			}
			return am.SnoozeFor(time.Minute)
		}), am.WithName("LostSnooze")); err != nil {
			t.Fatal(err)
		}
		if err := am.ProduceNow(context.Background(), e.db, Job{N: 1}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.p.ProcessBatch(context.Background()); err != nil {
			t.Fatal(err)
		}
		var m am.ConsumerMessage
		if err := e.db.Take(&m).Error; err != nil {
			t.Fatal(err)
		}
		if m.AvailableAfter != other || m.Snoozes != 0 || m.Attempts != 0 {
			t.Fatalf("after a snooze on a lost lease: due %d (other claim's lease %d), snoozes %d, attempts %d; want the other lease, 0, 0",
				m.AvailableAfter, other, m.Snoozes, m.Attempts)
		}
	})
}

// The WithConcurrency limit holds across started processors and ProcessBatch calls running
// beside them, for a consumer registered after Start, and its messages all run.
func TestReviewLimitAcrossProcessBatchAndProcessors(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{ConsumerProcessors: railProcessors(dialect), ProcessorBatchSize: 10})
		e.start(t) // before the limited consumer exists
		const limit, total = 2, 40
		var g peakGauge
		var done atomic.Int64
		if err := am.Register(e.p, am.ConsumerFunc[slowJob](func(ctx context.Context, m *am.Message[slowJob]) error {
			g.enter()
			defer g.leave()
			select { // overlap with other runs, if the limit let any
			case <-ctx.Done():
			case <-time.After(5 * time.Millisecond):
			}
			done.Add(1)
			return nil
		}), am.WithName("LateLimited"), am.WithConcurrency(limit)); err != nil {
			t.Fatal(err)
		}
		produceAll(t, e.db, make([]slowJob, total))
		stopBatches := batchLoop(e)
		eventually(t, func() bool { return done.Load() == total }, "every message consumed")
		if err := stopBatches(); err != nil {
			t.Fatalf("ProcessBatch beside the processors: %v", err)
		}
		if p := g.peak.Load(); p > limit {
			t.Fatalf("LateLimited ran %d at once, limit %d", p, limit)
		}
	})
}

// SQLite with several rails, one processor each, and ProcessBatch beside them: claims and
// completions of the rails interleave on one write lock; every message runs once, its
// Message.Tx write commits with its completion, nothing is poisoned or left.
func TestReviewSQLiteRailsInterleave(t *testing.T) {
	t.Parallel()
	e := setup(t, "sqlite", am.Config{ProcessorBatchSize: 5, ConsumerConcurrency: 4,
		Rails: map[string]am.RailConfig{"a": {ProcessorBatchSize: 3}, "b": {ConsumerConcurrency: 2}, "c": {}}})
	if err := e.db.AutoMigrate(&ReviewMark{}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	runs := map[string]int{}
	for i, rail := range []string{"", "a", "b", "c"} {
		opts := []am.ConsumerOption{am.WithName("SQLiteOn" + rail), am.WithRail(rail)}
		if i%2 == 1 {
			opts = append(opts, am.WithConcurrency(1))
		}
		if err := am.Register(e.p, am.ConsumerFunc[fastJob](func(ctx context.Context, m *am.Message[fastJob]) error {
			mu.Lock()
			runs[m.ID]++
			mu.Unlock()
			return m.Tx.Create(&ReviewMark{ID: m.ID}).Error
		}), opts...); err != nil {
			t.Fatal(err)
		}
	}
	e.start(t)
	const each = 30
	produceAll(t, e.db, make([]fastJob, each))
	stopBatches := batchLoop(e)
	eventually(t, func() bool { return e.count(t, &ReviewMark{}) == 4*each }, "every rail's messages completed")
	if err := stopBatches(); err != nil {
		t.Fatalf("ProcessBatch beside the processors: %v", err)
	}
	eventually(t, func() bool { return e.pending(t) == 0 }, "no message left")
	mu.Lock()
	defer mu.Unlock()
	for id, n := range runs {
		if n != 1 {
			t.Errorf("message %s ran %d times, want once", id, n)
		}
	}
	if len(runs) != 4*each || e.count(t, &am.PoisonedMessage{}) != 0 {
		t.Fatalf("%d messages ran, %d poisoned; want %d and 0", len(runs), e.count(t, &am.PoisonedMessage{}), 4*each)
	}
}

// Hand-written rows whose rail differs from a configured one only by case or trailing
// spaces ("SLOW", "slow ", and " " beside the default rail "") are on rails this plugin
// does not run, on every database: never fetched, and listed by StatsByRail under their own
// spelling, Configured false. (MySQL/MariaDB's default collation is case-insensitive and
// PAD SPACE: "SLOW" = "slow" = "slow " there.)
func TestReviewRailComparesExactly(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{Rails: map[string]am.RailConfig{"slow": {}}})
		var slow, def recorder[fastJob]
		if err := am.Register(e.p, &slow, am.WithName("SlowOne"), am.WithRail("slow")); err != nil {
			t.Fatal(err)
		}
		if err := am.Register(e.p, &def, am.WithName("DefaultOne")); err != nil {
			t.Fatal(err)
		}
		due := e.clock.Now().Add(-time.Second).UnixMilli()
		rows := []struct{ id, consumer, rail string }{
			{"exact-slow", "SlowOne", "slow"}, {"upper", "SlowOne", "SLOW"}, {"padded", "SlowOne", "slow "},
			{"space", "DefaultOne", " "},
		}
		for _, r := range rows {
			if err := e.db.Exec("INSERT INTO consumer_messages (id, created_at, available_after, attempts, consumer_type, payload_type, payload, insert_id, rail) VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?)",
				r.id, due, due, r.consumer, "fastJob", `{"N":1}`, r.id, r.rail).Error; err != nil {
				t.Fatal(err)
			}
		}
		ctx := context.Background()
		for range 3 {
			if _, err := e.p.ProcessBatch(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if slow.count() != 1 || def.count() != 0 {
			t.Fatalf("ran %d of rail slow's and %d of the default rail's; want only exact-slow (1, 0)", slow.count(), def.count())
		}
		stats, err := e.p.StatsByRail(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]am.RailStats{}
		for _, s := range stats {
			got[s.Rail] = s
		}
		for _, rail := range []string{" ", "SLOW", "slow "} {
			if s, ok := got[rail]; !ok || s.Configured || s.Pending != 1 {
				t.Errorf("StatsByRail[%q] = %+v (present %v); want Configured false, Pending 1 (all: %+v)", rail, s, ok, stats)
			}
		}
		if s := got["slow"]; s.Pending != 0 || !s.Configured {
			t.Errorf("StatsByRail[slow] = %+v; want configured and empty", s)
		}
	})
}

// nilErr is an error type whose Error reads its receiver: a nil *nilErr returned as an
// error (the classic typed-nil mistake) panics when its text is read.
type nilErr struct{ msg string }

func (e *nilErr) Error() string { return e.msg }

// A consumer that returns a typed nil error (a nil *nilErr in a non-nil error) fails its
// run like any other error, with a reason that says so; the process does not crash where
// the engine reads the error's text.
func TestReviewTypedNilConsumerError(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{MaxAttempts: 1})
		if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
			var err *nilErr
			return err
		}), am.WithName("TypedNil")); err != nil {
			t.Fatal(err)
		}
		if err := am.ProduceNow(context.Background(), e.db, Job{N: 1}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.p.ProcessBatch(context.Background()); err != nil {
			t.Fatal(err)
		}
		var p am.PoisonedMessage
		if err := e.db.Take(&p).Error; err != nil {
			t.Fatalf("poisoned message: %v", err)
		}
		if !strings.Contains(p.LastError, "*asyncmonolith_test.nilErr") {
			t.Fatalf("poisoned with %q, want a reason naming the error's type", p.LastError)
		}
	})
}

// batchLoop runs ProcessBatch in a loop beside e's processors until the returned function
// is called; that function returns the first ProcessBatch error not matching one of
// tolerated (errors.Is), or nil.
func batchLoop(e *env, tolerated ...error) (stop func() error) {
	done, result := make(chan struct{}), make(chan error, 1)
	go func() {
		for {
			select {
			case <-done:
				result <- nil
				return
			default:
			}
			_, err := e.p.ProcessBatch(context.Background())
			if err != nil && !slices.ContainsFunc(tolerated, func(t error) bool { return errors.Is(err, t) }) {
				result <- err
				return
			}
		}
	}()
	return func() error {
		close(done)
		return <-result
	}
}
