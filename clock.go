package asyncmonolith

import (
	"context"
	"sync/atomic"
	"time"
)

// Clock is the plugin's time source. Due times (delays, retries after AttemptDelay,
// schedules), the breaker's cooldowns, consumer timeouts, AbandonGrace and Message.Tx's
// deadline read it. The processors' poll cadence, the backoff of retried database calls,
// completion timeouts and the idle timer of kept Message.Tx connections stay on the system
// clock: they pace or bound calls to the database, which works in real time.
//
// Nil (the default) is the system clock. Tests plug in asyncmonolithtest.Clock, which
// moves only when told, so that a test of a timeout or a backoff waits for nothing.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// NewTimer returns a timer whose channel receives the time once d has passed, as
	// time.NewTimer does.
	NewTimer(d time.Duration) Timer
	// AfterFunc calls f in its own goroutine once d has passed, as time.AfterFunc does.
	// The returned Timer's C is nil.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a timer of a Clock, with the methods of *time.Timer.
type Timer interface {
	// C is the channel the time is sent on (nil for an AfterFunc timer).
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it stopped it.
	Stop() bool
	// Reset makes the timer fire once d has passed from now; it reports whether the timer
	// was active.
	Reset(d time.Duration) bool
}

// SystemClock is the system's clock: time.Now and the time package's timers.
func SystemClock() Clock { return systemClock{} }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) NewTimer(d time.Duration) Timer { return systemTimer{time.NewTimer(d)} }

func (systemClock) AfterFunc(d time.Duration, f func()) Timer {
	return systemTimer{time.AfterFunc(d, f)}
}

type systemTimer struct{ t *time.Timer }

func (t systemTimer) C() <-chan time.Time        { return t.t.C }
func (t systemTimer) Stop() bool                 { return t.t.Stop() }
func (t systemTimer) Reset(d time.Duration) bool { return t.t.Reset(d) }

// withDeadline is context.WithDeadline on clock c. On the system clock it is
// context.WithDeadline itself. On another clock the context ends when c's timer fires:
// its Err is then context.DeadlineExceeded, as a consumer expects, but its Deadline is its
// parent's, because network code turns a context's deadline into a socket deadline in real
// time.
func withDeadline(c Clock, parent context.Context, deadline time.Time) (context.Context, context.CancelFunc) {
	if _, ok := c.(systemClock); ok {
		return context.WithDeadline(parent, deadline)
	}
	inner, cancel := context.WithCancelCause(parent)
	ctx := &clockDeadlineCtx{Context: inner}
	t := c.AfterFunc(deadline.Sub(c.Now()), func() {
		ctx.expired.Store(true)
		cancel(context.DeadlineExceeded)
	})
	return ctx, func() {
		if t != nil { // a user Clock may return none: its timer then fires into a context already ended
			t.Stop()
		}
		cancel(context.Canceled)
	}
}

// clockDeadlineCtx is a context ended by a Clock's timer.
type clockDeadlineCtx struct {
	context.Context
	expired atomic.Bool
}

// Err reports context.DeadlineExceeded once the clock's timer ended the context (unless
// the parent had ended it first).
func (c *clockDeadlineCtx) Err() error {
	err := c.Context.Err()
	if err != nil && c.expired.Load() && context.Cause(c.Context) == context.DeadlineExceeded {
		return context.DeadlineExceeded
	}
	return err
}
