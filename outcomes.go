package asyncmonolith

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"
)

// A consumer directs its message's outcome by the error it returns: nil completes it, an
// error matching ErrPermanent poisons it at once, a *SnoozeError runs it again later
// without using an attempt, and any other error is a failed attempt, retried by the retry
// policy until the last attempt poisons it. Wrapped errors count (errors.Is/As); a
// permanent error wins over a snooze joined with it.

// Snooze defaults and limits.
const (
	// MaxSnoozesDefault is how many times a message may be snoozed: the next snooze counts
	// as a failed attempt.
	MaxSnoozesDefault = 100
	// MaxSnoozeDurationDefault is the longest snooze: a longer one is shortened to it.
	MaxSnoozeDurationDefault = 24 * time.Hour
)

var (
	// ErrSnoozed matches a *SnoozeError: a consumer's request to run its message again
	// later without using an attempt (Result.Err of a snoozed run).
	ErrSnoozed = errors.New("asyncmonolith: snoozed")
	// ErrSnoozeLimit marks the failure a snooze becomes when its message was snoozed the
	// most times allowed already (Config.MaxSnoozes, WithMaxSnoozes): it uses an attempt,
	// and on the last attempt poisons the message with this as its reason.
	ErrSnoozeLimit = errors.New("asyncmonolith: snooze limit reached; counted as a failed attempt")
)

// SnoozeError asks for the message to run again at Until, or, when Until is zero, For
// after its run ends, without using an attempt. Return it from Consume with SnoozeFor or
// SnoozeUntil (wrapped or not). A time in the past, or a negative duration, means at once;
// one beyond Config.MaxSnoozeDuration is shortened to it. Message.Tx is rolled back: a
// snooze is not a success, and the next run starts afresh. Snoozes do not feed the
// consumer's breaker and are counted apart (Counters.Snoozed, Result.Snoozed). A message
// is snoozed at most Config.MaxSnoozes times (Message.Snoozes counts them); a snooze
// beyond is a failed attempt matching ErrSnoozeLimit.
type SnoozeError struct {
	Until time.Time     // when to run again; zero: For after the run
	For   time.Duration // how long to wait, when Until is zero
}

// SnoozeFor returns an error that runs the message again d after its run ends, without
// using an attempt.
func SnoozeFor(d time.Duration) error { return &SnoozeError{For: d} }

// SnoozeUntil returns an error that runs the message again at t, without using an attempt.
func SnoozeUntil(t time.Time) error { return &SnoozeError{Until: t} }

func (e *SnoozeError) Error() string {
	if e == nil {
		return "asyncmonolith: nil *SnoozeError"
	}
	if !e.Until.IsZero() {
		return "asyncmonolith: snoozed until " + e.Until.UTC().Format(time.RFC3339Nano)
	}
	return "asyncmonolith: snoozed for " + e.For.String()
}

// Is reports whether target is ErrSnoozed.
func (e *SnoozeError) Is(target error) bool { return target == ErrSnoozed }

// delay is how long after now the snooze asks for, clamped to [0, most].
func (e *SnoozeError) delay(now time.Time, most time.Duration) (d time.Duration, clamped bool) {
	d = e.For
	if !e.Until.IsZero() {
		d = e.Until.Sub(now) // saturates at the extremes of time.Duration
	}
	switch {
	case d < 0:
		return 0, false
	case d > most:
		return most, true
	}
	return d, false
}

// PermanentError is a consumer error that no retry can fix: the message is poisoned at
// once with the error as its reason, and the consumer's breaker does not count the run.
// It matches ErrPermanent and unwraps to Err. Make one with Permanent.
type PermanentError struct {
	Err error // the reason
}

// Permanent marks err as permanent: a consumer that returns it (wrapped or not) has its
// message poisoned on this run, with err as the reason kept in last_error. Permanent(nil)
// is ErrPermanent.
func Permanent(err error) error {
	if err == nil {
		return ErrPermanent
	}
	return &PermanentError{Err: err}
}

func (e *PermanentError) Error() string {
	if e == nil || e.Err == nil {
		return ErrPermanent.Error()
	}
	return ErrPermanent.Error() + ": " + e.Err.Error()
}

// Unwrap returns the reason.
func (e *PermanentError) Unwrap() error {
	if e == nil {
		return nil
	}
	return e.Err
}

// Is reports whether target is ErrPermanent.
func (e *PermanentError) Is(target error) bool { return target == ErrPermanent }

// WithMaxSnoozes sets how many times this consumer's messages may be snoozed, overriding
// Config.MaxSnoozes.
func WithMaxSnoozes(n int) ConsumerOption { return func(o *consumerOptions) { o.maxSnoozes = n } }

// snoozeOf returns the snooze err asks for, or nil.
func snoozeOf(err error) *SnoozeError {
	var se *SnoozeError
	if errors.As(err, &se) && se != nil {
		return se
	}
	return nil
}

// snooze decides o's snooze se: the time it is due again, and whether it is granted (the
// message was snoozed fewer times than its bound). Refused, o.err becomes the failure
// (ErrSnoozeLimit) and the time is the earliest its retry may be due.
func (p *Plugin) snooze(o *outcome, se *SnoozeError, now time.Time) (time.Time, bool) {
	d, clamped := se.delay(now, p.cfg.MaxSnoozeDuration)
	if clamped {
		p.cfg.Logger.WarnContext(o.ctx, "asyncmonolith: snooze longer than Config.MaxSnoozeDuration; shortened to it",
			"message_id", o.row.ID, "consumer", o.row.ConsumerType, "snooze", se.Error(), "max_snooze_duration", p.cfg.MaxSnoozeDuration)
	}
	at := now.Add(d)
	bound := p.cfg.MaxSnoozes
	if reg, ok := p.registry.consumer(o.row.ConsumerType); ok && reg.maxSnoozes > 0 {
		bound = reg.maxSnoozes
	}
	if o.row.Snoozes < bound {
		return at, true
	}
	o.err = fmt.Errorf("%w: the message was snoozed %d times, the most allowed (Config.MaxSnoozes, WithMaxSnoozes); the consumer returned %v",
		ErrSnoozeLimit, o.row.Snoozes, o.err)
	return at, false
}

// inspectable returns err, or, when asking it what it is panics — a typed nil whose
// Unwrap, Is or As reads its receiver (a nil *MyError in a non-nil error) —, an error that
// names its type and the panic. The engine asks a consumer's error what it is (a timeout,
// a panic, permanent, a snooze, …) on the run's goroutine and on the completer: the
// consumer's mistake fails its run, not the process.
func inspectable(err error) (safe error) {
	if err == nil {
		return nil
	}
	defer func() {
		if v := recover(); v != nil {
			safe = fmt.Errorf("asyncmonolith: the consumer's error, a %T, panicked when inspected (a typed nil?): %v", err, v)
		}
	}()
	for _, target := range inspectedAs {
		errors.Is(err, target)
	}
	var pe *PanicError
	var se *SnoozeError
	errors.As(err, &pe)
	errors.As(err, &se)
	return err
}

// inspectedAs is what the engine asks a consumer's error with errors.Is.
var inspectedAs = []error{ErrConsumerTimeout, ErrPermanent, ErrSnoozed, ErrSnoozeLimit, ErrLeaseLost, ErrDecodePayload,
	ErrRetryable, errNoTxSlot, context.Canceled, context.DeadlineExceeded, driver.ErrBadConn, sql.ErrConnDone, sql.ErrTxDone}
