package asyncmonolith

import (
	"errors"
	"sync/atomic"
)

// Counters are cumulative counts of one plugin's processing since it was created, read
// with Plugin.Counters: for monitoring, and for telling contention from failure.
type Counters struct {
	Batches   uint64 // batches that fetched at least one message and committed
	Succeeded uint64 // consumer runs that completed their message
	Failed    uint64 // consumer runs that failed (their messages retried or poisoned)
	Poisoned  uint64 // messages moved to poisoned_messages
	SetAside  uint64 // messages set aside, without an attempt, because their consumer was paused
	// Conflicts counts batches rolled back by a transient conflict (a deadlock, a lock wait
	// timeout, a serialization failure) and retried at once; their messages ran again.
	Conflicts uint64
	// BatchErrors counts batches that failed otherwise (a lost connection, a hard stop);
	// their messages run again later.
	BatchErrors uint64
}

// counters are the live Counters.
type counters struct {
	batches, succeeded, failed, poisoned, setAside, conflicts, batchErrors atomic.Uint64
}

// Counters returns a snapshot of the plugin's processing counts.
func (p *Plugin) Counters() Counters {
	c := &p.counters
	return Counters{Batches: c.batches.Load(), Succeeded: c.succeeded.Load(), Failed: c.failed.Load(),
		Poisoned: c.poisoned.Load(), SetAside: c.setAside.Load(), Conflicts: c.conflicts.Load(), BatchErrors: c.batchErrors.Load()}
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

// completed counts the outcomes of a committed batch.
func (c *counters) completed(outcomes []outcome) {
	var ok, failed, poisoned, aside uint64
	for i := range outcomes {
		o := &outcomes[i]
		switch {
		case !o.setAside.IsZero():
			aside++
		case o.err == nil:
			ok++
		default:
			failed++
			if o.poisoned {
				poisoned++
			}
		}
	}
	c.succeeded.Add(ok)
	c.failed.Add(failed)
	c.poisoned.Add(poisoned)
	c.setAside.Add(aside)
}
