package asyncmonolith

import (
	"errors"
	"sync/atomic"
)

// Counters are cumulative counts of one plugin's processing since it was created, read
// with Plugin.Counters: for monitoring, and for telling contention from failure.
type Counters struct {
	Batches   uint64 // claims that found at least one message
	Succeeded uint64 // consumer runs that completed their message
	Failed    uint64 // consumer runs that failed (their messages retried or poisoned)
	Snoozed   uint64 // consumer runs that snoozed their message (SnoozeFor): neither success nor failure
	Poisoned  uint64 // messages moved to poisoned_messages
	SetAside  uint64 // messages set aside, without an attempt, because their consumer was paused
	// Conflicts counts batches rolled back by a transient conflict (a deadlock, a lock wait
	// timeout, a serialization failure) and retried at once; their messages ran again.
	Conflicts uint64
	// BatchErrors counts claims that failed otherwise (a lost connection).
	BatchErrors uint64
	// LeaseLost counts runs whose completion was refused because their message's lease had
	// ended and another processor had claimed it (ErrLeaseLost); their Message.Tx writes
	// were rolled back.
	LeaseLost uint64
	// Released counts runs cut short by a hard stop: their messages are due again at once,
	// without an attempt counted.
	Released uint64
}

// counters are the live Counters.
type counters struct {
	batches, succeeded, failed, snoozed, poisoned, setAside, conflicts, batchErrors, leaseLost, released atomic.Uint64
}

// Counters returns a snapshot of the plugin's processing counts.
func (p *Plugin) Counters() Counters {
	c := &p.counters
	return Counters{Batches: c.batches.Load(), Succeeded: c.succeeded.Load(), Failed: c.failed.Load(), Snoozed: c.snoozed.Load(),
		Poisoned: c.poisoned.Load(), SetAside: c.setAside.Load(), Conflicts: c.conflicts.Load(), BatchErrors: c.batchErrors.Load(),
		LeaseLost: c.leaseLost.Load(), Released: c.released.Load()}
}

// batch counts a batch's end: n messages fetched, err its failure.
func (c *counters) batch(n int, err error) {
	switch {
	case err == nil && n > 0:
		c.batches.Add(1)
	case err == nil:
	case errors.Is(err, ErrRetryable):
		c.conflicts.Add(1)
	default:
		c.batchErrors.Add(1)
	}
}

// completed counts the outcomes of one completion; recorded is false when it failed (the
// messages run again when their lease ends, and count then).
func (c *counters) completed(outcomes []outcome, recorded bool) {
	var ok, failed, snoozed, poisoned, aside, lost, released uint64
	for i := range outcomes {
		o := &outcomes[i]
		switch {
		case !recorded && !o.done:
		case errors.Is(o.err, ErrLeaseLost):
			lost++
		case !o.setAside.IsZero():
			aside++
		case o.release:
			released++
		case o.err == nil:
			ok++
		case o.snoozed:
			snoozed++
		default:
			failed++
			if o.poisoned {
				poisoned++
			}
		}
	}
	c.succeeded.Add(ok)
	c.failed.Add(failed)
	c.snoozed.Add(snoozed)
	c.poisoned.Add(poisoned)
	c.setAside.Add(aside)
	c.leaseLost.Add(lost)
	c.released.Add(released)
}
