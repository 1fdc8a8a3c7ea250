package asyncmonolith

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// A consumer whose runs keep failing (a dependency is down, a bad deploy) would otherwise
// burn every attempt of its whole backlog and take the processors' time from healthy
// consumers: a poison storm. The breaker pauses such a consumer instead. After
// Config.BreakerFailures failed runs in a row its due messages are set aside, without
// counting an attempt, for a cooldown; then one run probes it: a success closes the
// breaker, a failure pauses the consumer again for twice as long (up to
// Config.BreakerMaxCooldown). Breakers are per process; the messages they set aside are
// set aside for every instance.

// breakers holds the breaker of each consumer type of one plugin.
type breakers struct {
	threshold   int
	cooldown    time.Duration
	maxCooldown time.Duration
	disabled    bool

	mu sync.Mutex
	by map[string]*breaker
	// tracked is len(by), read without the lock: while no consumer has failed, checking
	// and recording a run costs an atomic load.
	tracked atomic.Int32
}

// breaker is one consumer type's state.
type breaker struct {
	failures  int       // consecutive failed runs since the last success or trip
	trips     int       // consecutive trips; the cooldown doubles with each
	openUntil time.Time // the consumer's messages are set aside until then
}

func newBreakers(cfg Config) *breakers {
	return &breakers{threshold: cfg.BreakerFailures, cooldown: cfg.BreakerCooldown,
		maxCooldown: cfg.BreakerMaxCooldown, disabled: cfg.DisableBreaker, by: map[string]*breaker{}}
}

// pausedUntil reports until when consumerType's messages are set aside, or the zero time
// when they may run (closed, or half-open after the cooldown).
func (bs *breakers) pausedUntil(consumerType string, now time.Time) time.Time {
	if bs.disabled || bs.tracked.Load() == 0 {
		return time.Time{}
	}
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if b := bs.by[consumerType]; b != nil && now.Before(b.openUntil) {
		return b.openUntil
	}
	return time.Time{}
}

// breakerCounts reports whether a run's error says something about the consumer (rather
// than about the message, the processor or the processor's own connection).
func breakerCounts(err error) bool {
	return !errors.Is(err, ErrDecodePayload) && !errors.Is(err, ErrPermanent) && !errors.Is(err, ErrSnoozed) && !errors.Is(err, context.Canceled) &&
		!errors.Is(err, driver.ErrBadConn) && !errors.Is(err, sql.ErrConnDone) && !errors.Is(err, sql.ErrTxDone)
}

// record counts one run's outcome. It returns the time until which the consumer is now
// paused when this run tripped its breaker (the zero time otherwise), and whether this
// run was a successful probe that closed a tripped breaker.
func (bs *breakers) record(consumerType string, err error, now time.Time) (until time.Time, recovered bool) {
	if bs.disabled || (err != nil && !breakerCounts(err)) || (err == nil && bs.tracked.Load() == 0) {
		return time.Time{}, false
	}
	bs.mu.Lock()
	defer bs.mu.Unlock()
	b := bs.by[consumerType]
	if err == nil {
		if b != nil {
			delete(bs.by, consumerType) // closed: forget the past
			bs.tracked.Store(int32(len(bs.by)))
			return time.Time{}, b.trips > 0
		}
		return time.Time{}, false
	}
	if b == nil {
		b = &breaker{}
		bs.by[consumerType] = b
		bs.tracked.Store(int32(len(bs.by)))
	}
	b.failures++
	// A failed probe (the first run after a cooldown) trips again at once.
	if b.failures < bs.threshold && b.trips == 0 {
		return time.Time{}, false
	}
	if now.Before(b.openUntil) {
		return time.Time{}, false // another processor's run tripped it already
	}
	b.trips++
	wait := bs.cooldown
	for i := 1; i < b.trips && wait < bs.maxCooldown; i++ {
		wait *= 2
	}
	b.failures = 0
	b.openUntil = now.Add(min(wait, bs.maxCooldown))
	return b.openUntil, false
}

// paused returns the consumers whose breaker is open at now, with the end of their pause.
func (bs *breakers) paused(now time.Time) map[string]time.Time {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	out := map[string]time.Time{}
	for name, b := range bs.by {
		if now.Before(b.openUntil) {
			out[name] = b.openUntil
		}
	}
	return out
}

// Paused returns the consumers this process has paused because they kept failing, with
// the time each pause ends (see Config.BreakerFailures). It is empty when none is paused.
func (p *Plugin) Paused() map[string]time.Time {
	p.mu.Lock()
	bs := p.breaker
	p.mu.Unlock()
	if bs == nil {
		return map[string]time.Time{}
	}
	return bs.paused(p.now())
}
