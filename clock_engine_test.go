package asyncmonolith_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// The engine's consumer timers run on Config.Clock: these tests use timeouts of an hour,
// which real time cannot reach while they run, so only the test clock can fire them.

// pendingAt reports whether the clock still has a timer due at exactly at: a timer that
// fired is gone from the clock's list as soon as Advance fires it, so this check does not
// race with the goroutine the timer starts.
func pendingAt(e *env, at time.Time) bool {
	next, ok := e.clock.NextTimer()
	return ok && next.Equal(at)
}

// A consumer's timeout fires when the clock reaches it, not a millisecond before.
func TestClockDrivesConsumerTimeout(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		const timeout = time.Hour
		e := setup(t, dialect, am.Config{MaxAttempts: 1})
		ended := make(chan error, 1)
		start, ctx, wait := startOne(t, e, timeout, func(ctx context.Context) error {
			<-ctx.Done()
			ended <- ctx.Err()
			return ctx.Err()
		})
		e.clock.Advance(timeout - time.Millisecond)
		if !pendingAt(e, start.Add(timeout)) || ctx.Err() != nil {
			t.Fatalf("timeout fired %s early (context: %v)", time.Millisecond, ctx.Err())
		}
		e.clock.Advance(time.Millisecond)
		if err := recv(t, ended, "the consumer's context ends"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("the consumer's context ended with %v, want DeadlineExceeded", err)
		}
		wait()
		var p am.PoisonedMessage
		if err := e.db.First(&p).Error; err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(p.LastError, "timed out after 1h0m0s") || strings.Contains(p.LastError, "abandoned") {
			t.Fatalf("poisoned with %q, want a timeout (not an abandonment)", p.LastError)
		}
	})
}

// startOne runs one message of a consumer "Late" that calls consume, in a batch of its own,
// and waits for it to run. It returns when the run began on the clock, the consumer's
// context and the batch's wait.
func startOne(t *testing.T, e *env, timeout time.Duration, consume func(ctx context.Context) error) (time.Time, context.Context, func() int) {
	t.Helper()
	running := make(chan context.Context, 1)
	if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
		running <- ctx
		return consume(ctx)
	}), am.WithName("Late"), am.WithTimeout(timeout)); err != nil {
		t.Fatal(err)
	}
	if err := am.ProduceNow(context.Background(), e.db, Job{N: 1}); err != nil {
		t.Fatal(err)
	}
	start := e.clock.Now()
	wait := e.batchAsync(t)
	return start, recv(t, running, "the consumer runs"), wait
}

// pastTimeout runs one message of a consumer that waits for release (ignoring its context)
// and then returns ret's error, moves the clock to its timeout and waits for its context to
// end. It returns when the run began on the clock and the batch's wait.
func pastTimeout(t *testing.T, e *env, timeout time.Duration, release <-chan struct{}, ret func(ctx context.Context) error) (time.Time, func() int) {
	t.Helper()
	start, ctx, wait := startOne(t, e, timeout, func(ctx context.Context) error {
		<-release
		return ret(ctx)
	})
	e.clock.Advance(timeout)
	recv(t, ctx.Done(), "the consumer's context ends at its timeout")
	return start, wait
}

// A consumer that ignores its context is abandoned when the clock passes its timeout plus
// AbandonGrace, not a millisecond before.
func TestClockDrivesAbandonGrace(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		const timeout, grace = time.Hour, 30 * time.Minute
		e := setup(t, dialect, am.Config{MaxAttempts: 1, AbandonGrace: grace})
		release := make(chan struct{})
		t.Cleanup(func() { close(release) })
		start, wait := pastTimeout(t, e, timeout, release, func(context.Context) error { return nil }) // ignores its context
		abandonAt := start.Add(timeout + grace)
		eventually(t, func() bool { return pendingAt(e, abandonAt) }, "the processor waits AbandonGrace on the clock")
		e.clock.Advance(grace - time.Millisecond)
		if !pendingAt(e, abandonAt) {
			t.Fatalf("abandoned before timeout + AbandonGrace (%s)", timeout+grace)
		}
		if n := e.pending(t); n != 1 {
			t.Fatalf("%d messages pending before AbandonGrace passed, want 1", n)
		}
		e.clock.Advance(time.Millisecond)
		wait()
		var p am.PoisonedMessage
		if err := e.db.First(&p).Error; err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(p.LastError, "abandoned") {
			t.Fatalf("poisoned with %q, want an abandonment", p.LastError)
		}
	})
}

// A Message.Tx begun after the consumer's deadline on the clock fails (the consumer ignored
// its context): real time is an hour short of the deadline.
func TestClockDrivesMessageTxDeadline(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		const timeout = time.Hour
		e := setup(t, dialect, am.Config{MaxAttempts: 1, AbandonGrace: time.Hour})
		if err := e.db.AutoMigrate(&Audit{}); err != nil {
			t.Fatal(err)
		}
		running, proceed, wrote := make(chan context.Context, 1), make(chan struct{}), make(chan error, 1)
		if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
			running <- ctx
			<-proceed // past its deadline on the clock: it writes anyway
			err := m.Tx.Create(&Audit{Msg: "late"}).Error
			wrote <- err
			return err
		}), am.WithName("Late"), am.WithTimeout(timeout)); err != nil {
			t.Fatal(err)
		}
		if err := am.ProduceNow(context.Background(), e.db, Job{N: 1}); err != nil {
			t.Fatal(err)
		}
		wait := e.batchAsync(t)
		ctx := recv(t, running, "the consumer runs")
		e.clock.Advance(timeout)
		recv(t, ctx.Done(), "the consumer's context ends") // the clock's timer ends it in a goroutine of its own
		close(proceed)
		if err := recv(t, wrote, "the late write returns"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a Message.Tx begun after the deadline: %v, want context.DeadlineExceeded", err)
		}
		wait()
		if n := e.count(t, &Audit{}); n != 0 {
			t.Fatalf("%d audit rows committed by a Message.Tx begun after its deadline", n)
		}
		var p am.PoisonedMessage
		if err := e.db.First(&p).Error; err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(p.LastError, "timed out") {
			t.Fatalf("poisoned with %q, want a timeout", p.LastError)
		}
	})
}

// Under started processors a run begins at a moment the test does not see: advancing the
// clock step by step until the message is poisoned times it out all the same, and the
// message is poisoned only once a whole timeout has passed on the clock since its run.
func TestClockDrivesTimeoutsOfStartedProcessors(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		const timeout = time.Hour
		// The run's start is the clock's reading between BeforeConsume and the consumer
		// (its timeout's timer is set then). The consumer reads the clock after it: a step
		// taken in between would make that reading later than the run's start, and the
		// check below fail on a correct timeout. gate, held from BeforeConsume until the
		// consumer has read the clock, keeps the steps out of that span.
		var gate sync.Mutex
		// The steps do not wait for the run's completion either: with the default
		// LeaseMargin, the step after the one that fires the timeout would end the lease
		// while the timed-out run's completion is still on its way, another claim would run
		// the message again, and so on. A lease longer than advanceUntil can move the clock
		// (10 min every 2 ms tick for 20 s: under 70 days) keeps the message this run's.
		e := setup(t, dialect, am.Config{MaxAttempts: 1, LeaseMargin: 365 * 24 * time.Hour, Hooks: am.Hooks{
			BeforeConsume: func(ctx context.Context, _ am.MessageInfo) context.Context { gate.Lock(); return ctx },
		}})
		var started atomic.Int64 // the clock's reading as the run began (Unix ms)
		if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
			started.Store(e.clock.Now().UnixMilli())
			gate.Unlock()
			<-ctx.Done()
			return ctx.Err()
		}), am.WithName("Background"), am.WithTimeout(timeout)); err != nil {
			t.Fatal(err)
		}
		if err := am.ProduceNow(context.Background(), e.db, Job{N: 1}); err != nil {
			t.Fatal(err)
		}
		e.start(t)
		e.advanceUntil(t, &gate, func() bool { return e.count(t, &am.PoisonedMessage{}) == 1 }, 10*time.Minute, "the message is poisoned")
		var p am.PoisonedMessage
		if err := e.db.First(&p).Error; err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(p.LastError, "timed out after 1h0m0s") {
			t.Fatalf("poisoned with %q, want the timeout", p.LastError)
		}
		if ran := time.Duration(p.PoisonedAt-started.Load()) * time.Millisecond; ran < timeout {
			t.Fatalf("poisoned %s after its run began on the clock, before its %s timeout", ran, timeout)
		}
	})
}

// A consumer that returns after its timeout, within AbandonGrace, leaves no AbandonGrace
// timer behind: the run stops it (a leftover timer kept the run, and its claim's memory,
// until it fired).
func TestAbandonGraceTimerStopsWhenTheConsumerReturns(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		const timeout, grace = time.Hour, 30 * time.Minute
		e := setup(t, dialect, am.Config{MaxAttempts: 3, AbandonGrace: grace, DisableBreaker: true})
		graceSet := make(chan struct{}) // the consumer returns late, once the grace timer is on the clock
		start, wait := pastTimeout(t, e, timeout, graceSet, func(ctx context.Context) error { return ctx.Err() })
		eventually(t, func() bool { return pendingAt(e, start.Add(timeout+grace)) }, "the AbandonGrace timer is set")
		close(graceSet)
		wait()
		if n := e.clock.Timers(); n != 0 {
			next, _ := e.clock.NextTimer()
			t.Fatalf("%d timers left on the clock after the run ended (next at %s after the start), want 0", n, next.Sub(start))
		}
		var row am.ConsumerMessage
		if err := e.db.First(&row).Error; err != nil || row.Attempts != 1 || row.LastError == nil || !strings.Contains(*row.LastError, "timed out") {
			t.Fatalf("the late run: %+v, %v; want a retry after a timeout, 1 attempt", row, err)
		}
	})
}
