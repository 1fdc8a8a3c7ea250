package asyncmonolith

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"time"
)

// A failed run's message waits before its next attempt for the delay its consumer's retry
// policy chooses (WithRetryPolicy), else Config.RetryPolicy's, else Config.AttemptDelay.
// The run asks the policy on its own goroutine when its consumer returns, and the completer
// stores the due time (when it records the failure, on the clock of Config.Clock, plus the
// delay) in available_after.

// Retry policy defaults and limits.
const (
	// ExponentialBackoffBaseDefault is ExponentialBackoff's delay after the first failed run:
	// AttemptDelayDefault, so that switching to backoff never retries sooner than before.
	ExponentialBackoffBaseDefault = AttemptDelayDefault
	// ExponentialBackoffMaxDefault caps ExponentialBackoff's delay.
	ExponentialBackoffMaxDefault = time.Hour
	// ExponentialBackoffJitterDefault is the fraction of each ExponentialBackoff delay that
	// jitter may take off: delays spread over [0.75·d, d].
	ExponentialBackoffJitterDefault = 0.25
	// RetryDelayMax is the longest delay a retry policy can set: longer delays (and a
	// built-in policy's parameters) are clamped to it, negative delays to 0.
	RetryDelayMax = 30 * 24 * time.Hour
)

// RetryPolicy chooses how long a message whose run failed waits before its next attempt.
// It is called on the failed run's goroutine when its consumer returns, possibly for many
// messages at once (it must be safe for concurrent use), only for failures that are
// retried: not for a message's last attempt, a permanent error or a snooze. A policy that
// blocks holds up its own message (its run's slot, its lease) and no other's outcome; it
// is not abandoned as a consumer is, so Stop, even with a done context, waits for it. A policy that panics is logged and Config.AttemptDelay is used; a negative
// delay means at once (0) and one over RetryDelayMax is clamped to RetryDelayMax.
type RetryPolicy interface {
	// RetryDelay returns the wait after run m.Attempt (1 on the first) failed with err,
	// as the consumer returned it (wrapped by ErrConsumerTimeout when it timed out, a
	// *PanicError when it panicked).
	RetryDelay(m MessageInfo, err error) time.Duration
}

// RetryPolicyFunc adapts a function to a RetryPolicy: a policy of the attempt and the error,
// for one consumer (WithRetryPolicy) or all (Config.RetryPolicy).
type RetryPolicyFunc func(m MessageInfo, err error) time.Duration

// RetryDelay calls f.
func (f RetryPolicyFunc) RetryDelay(m MessageInfo, err error) time.Duration { return f(m, err) }

// FixedDelay retries after the same delay every time: Config.AttemptDelay as a policy, for
// a consumer that should not follow Config.RetryPolicy.
type FixedDelay time.Duration

// RetryDelay returns d.
func (d FixedDelay) RetryDelay(MessageInfo, error) time.Duration { return time.Duration(d) }

// ExponentialBackoff doubles the delay with every failed run of a message — Base after
// the first, 2·Base after the second, … — up to Max, and takes a jitter off each delay
// so that messages that failed together do not come back together. A zero field means its
// default (the ExponentialBackoff*Default constants).
//
// The jitter is a pure function of the message id and the attempt, not of a random
// source: a message's attempt always waits the same (tests can predict it with
// RetryDelay), and different messages spread evenly over [(1-Jitter)·d, d].
type ExponentialBackoff struct {
	Base     time.Duration // the delay after the first failed run
	Max      time.Duration // the longest delay (at least Base)
	Jitter   float64       // the fraction of a delay jitter may take off, in (0, 1]
	NoJitter bool          // exact delays: Base, 2·Base, 4·Base, … Max
}

// RetryDelay returns the jittered delay after run m.Attempt of message m.ID failed.
func (b ExponentialBackoff) RetryDelay(m MessageInfo, _ error) time.Duration {
	b = b.withDefaults()
	d := b.Base
	for i := 1; i < m.Attempt && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	if b.NoJitter || b.Jitter == 0 {
		return d
	}
	return d - time.Duration(float64(d)*b.Jitter*unitHash(m.ID, m.Attempt))
}

func (b ExponentialBackoff) withDefaults() ExponentialBackoff {
	if b.Base == 0 {
		b.Base = ExponentialBackoffBaseDefault
	}
	if b.Max == 0 {
		b.Max = max(ExponentialBackoffMaxDefault, b.Base)
	}
	if b.Jitter == 0 {
		b.Jitter = ExponentialBackoffJitterDefault
	}
	return b
}

// unitHash maps a message id and an attempt to [0, 1), evenly.
func unitHash(id string, attempt int) float64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	x := h.Sum64() ^ uint64(attempt)*0x9e3779b97f4a7c15
	// splitmix64's finalizer: FNV's low bits of similar ids are close.
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11) / (1 << 53)
}

// checkRetryPolicy validates the built-in policies' parameters; it returns the field at
// fault (relative to the policy), its value and what a valid value looks like.
func checkRetryPolicy(rp RetryPolicy) (field string, value any, reason string) {
	switch v := rp.(type) {
	case nil:
		return "", nil, ""
	case RetryPolicyFunc:
		if v == nil {
			return "", nil, "a nil RetryPolicyFunc"
		}
	case FixedDelay:
		if v < 0 || time.Duration(v) > RetryDelayMax {
			return "", time.Duration(v), "must be between 0 and " + RetryDelayMax.String()
		}
	case *ExponentialBackoff:
		if v == nil {
			return "", nil, "a nil *ExponentialBackoff"
		}
		return checkRetryPolicy(*v)
	case ExponentialBackoff:
		d := v.withDefaults()
		switch {
		case v.Base < 0 || v.Base > RetryDelayMax:
			return "Base", v.Base, "must be between 0 (default 10s) and " + RetryDelayMax.String()
		case v.Max < 0 || v.Max > RetryDelayMax:
			return "Max", v.Max, "must be between 0 (default 1h) and " + RetryDelayMax.String()
		case d.Max < d.Base:
			return "Max", v.Max, "must not be shorter than Base (" + d.Base.String() + ")"
		case math.IsNaN(v.Jitter) || v.Jitter < 0 || v.Jitter > 1:
			return "Jitter", v.Jitter, "must be between 0 (default 0.25) and 1"
		}
	}
	return "", nil, ""
}

// retryPolicyError is checkRetryPolicy's finding about Config.RetryPolicy, or nil.
func retryPolicyError(rp RetryPolicy) error {
	field, value, reason := checkRetryPolicy(rp)
	if reason == "" {
		return nil
	}
	name := "RetryPolicy"
	if field != "" {
		name += "." + field
	}
	return &ConfigError{name, value, reason}
}

// retryOptionError is checkRetryPolicy's finding about WithRetryPolicy's policy, or nil.
func retryOptionError(rp RetryPolicy) error {
	field, value, reason := checkRetryPolicy(rp)
	if reason == "" {
		return nil
	}
	if field != "" {
		return fmt.Errorf("%w: WithRetryPolicy: ExponentialBackoff.%s = %v: %s", ErrInvalidOption, field, value, reason)
	}
	if value != nil {
		return fmt.Errorf("%w: WithRetryPolicy: FixedDelay(%v): %s", ErrInvalidOption, value, reason)
	}
	return fmt.Errorf("%w: WithRetryPolicy: %s", ErrInvalidOption, reason)
}

// WithRetryPolicy sets how long this consumer's failed messages wait before their next
// attempt, overriding Config.RetryPolicy and Config.AttemptDelay (nil: theirs).
func WithRetryPolicy(rp RetryPolicy) ConsumerOption {
	return func(o *consumerOptions) { o.retry = rp }
}

// decideRetry settles what o's failed message does next, unless it is poisoned at once
// (ErrPermanent): a snooze granted (o.snoozed, o.retryAt), or refused by its bound (o.err
// becomes ErrSnoozeLimit's failure, o.notBefore the snooze's time); and, unless that was
// the last attempt, the retry policy's delay. The run calls it on its own goroutine, so a
// policy that blocks (it asks a service, waits for a lock) holds up its own message only
// (a message of a consumer unknown here included: its run asks it too); the completer
// calls it only for an outcome that no run decided.
func (p *Plugin) decideRetry(o *outcome, now time.Time) {
	o.decided = true
	if o.err == nil || errors.Is(o.err, ErrPermanent) {
		return
	}
	if se := snoozeOf(o.err); se != nil {
		at, granted := p.snooze(o, se, now)
		if granted {
			o.snoozed, o.retryAt = true, at
			return
		}
		o.notBefore = at // o.err is the snooze limit's failure now
	}
	if o.info.Attempt < o.info.MaxAttempts {
		o.delay = p.retryDelay(o, o.err)
	}
}

// retryDelay is the wait before the next attempt of o's message, which failed with err: its
// policy's choice, clamped to [0, RetryDelayMax]; Config.AttemptDelay when it has no policy
// or its policy panics.
func (p *Plugin) retryDelay(o *outcome, err error) (d time.Duration) {
	rp := p.cfg.RetryPolicy
	if reg, ok := p.registry.consumer(o.row.ConsumerType); ok && reg.retry != nil {
		rp = reg.retry
	}
	if rp == nil {
		return p.cfg.AttemptDelay
	}
	defer func() {
		if v := recover(); v != nil {
			p.cfg.Logger.ErrorContext(o.ctx, "asyncmonolith: retry policy panicked; using Config.AttemptDelay",
				"message_id", o.row.ID, "consumer", o.row.ConsumerType, "panic", fmt.Sprint(v), "attempt_delay", p.cfg.AttemptDelay)
			d = p.cfg.AttemptDelay
		}
	}()
	d = rp.RetryDelay(o.info, err)
	if d < 0 || d > RetryDelayMax {
		clamped := min(max(d, 0), RetryDelayMax)
		p.cfg.Logger.WarnContext(o.ctx, "asyncmonolith: retry policy returned a delay out of range; clamped",
			"message_id", o.row.ID, "consumer", o.row.ConsumerType, "delay", d, "clamped", clamped)
		d = clamped
	}
	return d
}
