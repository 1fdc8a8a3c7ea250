package asyncmonolith

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"time"
)

// The breaker's state machine is internal/breaker; this file holds what the plugin decides:
// which errors count against a consumer, and the Paused API.

// breakerCounts reports whether a run's error says something about the consumer (rather
// than about the message, the processor or the processor's own connection).
func breakerCounts(err error) bool {
	return !errors.Is(err, ErrDecodePayload) && !errors.Is(err, ErrPermanent) && !errors.Is(err, ErrSnoozed) && !errors.Is(err, context.Canceled) &&
		!errors.Is(err, driver.ErrBadConn) && !errors.Is(err, sql.ErrConnDone) && !errors.Is(err, sql.ErrTxDone)
}

// recordRun counts one run of consumerType against its breaker (see internal/breaker):
// a success, or a failure that says something about the consumer. It returns the time until
// which the consumer is now paused when this run tripped its breaker, and whether this run
// was a successful probe that closed a tripped breaker.
func (p *Plugin) recordRun(consumerType string, err error) (until time.Time, recovered bool) {
	if err != nil && !breakerCounts(err) {
		return time.Time{}, false
	}
	return p.breaker.Record(consumerType, err != nil, p.now())
}

// Paused returns the consumers this process has paused because they kept failing, with
// the time each pause ends (see Config.BreakerFailures). It is empty when none is paused.
func (p *Plugin) Paused() map[string]time.Time {
	if !p.ready.Load() {
		return map[string]time.Time{}
	}
	return p.breaker.Paused(p.now())
}
