package asyncmonolith

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/asyncmonolith/asyncmonolith/internal/wake"
)

// The path of one message, file by file: a processor (this file) claims due messages for
// a lease when it has free slots (claim.go), runs each on a goroutine of its own
// (run.go), with Message.Tx a transaction of the message's own (messagetx.go), and hands
// each outcome to its completer, which records it — delete, retry, poison — fenced by the
// lease (complete.go).

// processor is one consumer-processing loop of one rail: it keeps up to the rail's
// ConsumerConcurrency runs going, claiming more of the rail's messages as runs end.
type processor struct {
	p      *Plugin
	rail   *rail
	index  int
	wakeCh chan struct{}

	mu      sync.Mutex
	running int           // runs holding a slot
	freed   chan struct{} // signalled when enough slots are free to claim again
	idle    chan struct{} // closed when running drops to 0 while draining
	workers *workers
}

// completeAfterStop is how long outcomes are still recorded after a hard stop.
const completeAfterStop = 5 * time.Second

// wakeFollowUps is how many quick re-polls follow a wake that found nothing: a message
// produced in a caller's transaction wakes the processors before that transaction commits.
const wakeFollowUps = 6

func (pr *processor) loop(fetchCtx, workCtx context.Context) {
	// Each processor's consumer contexts hang off a context of its own, so that processors
	// do not contend for one parent's lock as they create and cancel them.
	workCtx, cancel := context.WithCancel(workCtx)
	defer cancel()
	p := pr.p
	cfg := p.cfg
	log := p.cfg.Logger.With("processor", pr.index)
	if pr.rail.name != DefaultRail {
		log = log.With("rail", pr.rail.name)
	}
	pr.freed = make(chan struct{}, 1)
	c := p.newCompleter(pr.rail.concurrency)
	// Outcomes are recorded even after a hard stop (they make the cut-short messages due
	// again at once), for a while: a database that is down must not hold Stop forever;
	// what is not recorded then is left to its lease.
	completeCtx, stopCompleting := context.WithCancel(context.WithoutCancel(workCtx))
	defer stopCompleting()
	afterStop := context.AfterFunc(workCtx, func() { time.AfterFunc(completeAfterStop, stopCompleting) })
	defer afterStop()
	go c.loop(completeCtx)
	defer func() {
		pr.drain()
		close(c.in)
		<-c.done
	}()
	report := func(o outcome) {
		if o.limit != nil {
			o.limit.release(1)
		}
		c.in <- o
		pr.release()
	}
	pr.workers = newWorkers()
	defer pr.workers.stop()
	followUps, failures := 0, 0
	var lastClaim time.Time
	// A staggered start keeps processors from polling in lockstep; a run ending signals
	// freed.
	wake.Loop(fetchCtx, time.Duration(rand.Int64N(int64(cfg.ProcessorMinDelay)+1)), pr.wakeCh, pr.freed, func(woken bool) time.Duration {
		if woken {
			followUps = wakeFollowUps
		}
		free := pr.free()
		if free == 0 || p.txConns.waiting.Load() > 0 {
			// While runs wait for a Message.Tx slot, more messages would only queue
			// behind them, their timeouts running.
			return wake.Keep
		}
		if free < pr.claimThreshold() {
			// Runs ending one by one must not each cost a claim, but slots that long runs
			// leave free must not stay idle either: claim what fits at most every
			// ProcessorMinDelay.
			if wait := time.Until(lastClaim.Add(cfg.ProcessorMinDelay)); wait > 0 {
				return wait
			}
		}
		want := min(free, pr.rail.batchSize)
		lastClaim = time.Now()
		n, err := pr.claimAndRun(workCtx, want, report)
		switch {
		case fetchCtx.Err() != nil:
			return wake.Keep // stopping: Loop returns
		case err != nil && errors.Is(err, ErrRetryable):
			failures = 0
			log.DebugContext(workCtx, "asyncmonolith: claim hit a transient conflict; retrying", "error", err)
			return time.Duration(rand.Int64N(int64(5 * time.Millisecond))) // contention: retry at once
		case err != nil:
			failures++
			delay := wake.Backoff(failures, cfg.ProcessorMinDelay, cfg.ProcessorMaxDelay)
			log.ErrorContext(workCtx, "asyncmonolith: claiming messages failed", "error", err, "retry_in", delay)
			return delay
		case n == want:
			failures = 0
			if pr.free() >= pr.claimThreshold() {
				return 0 // more are due and there is room: claim again at once
			}
			return cfg.ProcessorMinDelay
		case n == 0 && followUps > 0:
			followUps--
			return time.Millisecond << (wakeFollowUps - followUps - 1)
		default:
			failures = 0
			followUps = 0
			p.txConns.trim() // a quiet queue: kept Message.Tx connections go back to the pool
			return wake.Jitter(cfg.ProcessorMaxDelay)
		}
	})
}

// claimThreshold is how many slots must be free before the processor claims again: half a
// batch, so that runs ending one by one do not each cost a claim.
func (pr *processor) claimThreshold() int {
	return max(1, min(pr.rail.batchSize, pr.rail.concurrency)/2)
}

// free returns how many more runs may start.
func (pr *processor) free() int {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.rail.concurrency - pr.running
}

// release frees one run's slot.
func (pr *processor) release() {
	pr.mu.Lock()
	pr.running--
	if pr.running == 0 && pr.idle != nil {
		close(pr.idle)
		pr.idle = nil
	}
	pr.mu.Unlock()
	select { // coalesced: one pending signal stands for any number of ended runs
	case pr.freed <- struct{}{}:
	default:
	}
}

// drain waits until no run holds a slot (a graceful stop lets them finish; a hard stop
// has cancelled them). Abandoned runs have freed their slots.
func (pr *processor) drain() {
	pr.mu.Lock()
	if pr.running == 0 {
		pr.mu.Unlock()
		return
	}
	idle := make(chan struct{})
	pr.idle = idle
	pr.mu.Unlock()
	<-idle
}

// claimAndRun claims up to n messages and starts their runs; it returns how many it claimed.
func (pr *processor) claimAndRun(workCtx context.Context, n int, report func(outcome)) (int, error) {
	p := pr.p
	c, err := p.claim(workCtx, pr.rail.name, n)
	p.counters.batch(len(c.rows), err)
	if err != nil {
		return 0, p.wrapDBError("claim messages", err)
	}
	pr.mu.Lock()
	pr.running += len(c.rows)
	pr.mu.Unlock()
	runs := p.newRuns(workCtx, &c, report)
	for i := range runs {
		pr.workers.start(&runs[i])
	}
	return len(c.rows), nil
}

// processBatch runs up to a batch of each rail's due messages, rail after rail, and
// records their outcomes; it returns how many it claimed.
func (p *Plugin) processBatch(ctx context.Context) (int, error) {
	total := 0
	for _, rl := range p.cfg.rails() {
		n, err := p.processRailBatch(ctx, rl)
		total += n
		if err != nil || ctx.Err() != nil {
			return total, err
		}
	}
	return total, nil
}

// processRailBatch runs up to the rail's ProcessorBatchSize due messages and records their
// outcomes; it returns how many it claimed. A claim's lease covers one run from the claim,
// so it claims no more at a time than can start at once (the rail's ConsumerConcurrency)
// and records them when they have ended: a message claimed to wait for a slot, or left
// unrecorded behind a batch's slower runs, could see its lease end and another instance
// run it too.
func (p *Plugin) processRailBatch(ctx context.Context, rl *rail) (int, error) {
	limit := rl.batchSize
	total := 0
	for total < limit {
		want := min(limit-total, rl.concurrency)
		n, err := p.processClaim(ctx, rl.name, want)
		total += n
		if err != nil || n < want || ctx.Err() != nil {
			return total, err
		}
	}
	return total, nil
}

// claimConflictRetries is how many times ProcessBatch claims again after a transient
// conflict (a deadlock with another instance's claim), as a started processor does.
const claimConflictRetries = 5

// claimRetrying is claim, tried again after a transient conflict: the claim is a
// transaction of its own, and a conflict rolled it back with nothing claimed.
func (p *Plugin) claimRetrying(ctx context.Context, rl string, n int) (claimed, error) {
	c, err := p.claim(ctx, rl, n)
	for i := 0; i < claimConflictRetries && err != nil && p.dialect.Retryable(err); i++ {
		t := time.NewTimer(time.Duration(rand.Int64N(int64(5*time.Millisecond))) << i)
		select {
		case <-ctx.Done():
			t.Stop()
			return c, err
		case <-t.C:
		}
		p.counters.batch(0, p.wrapDBError("claim messages", err)) // a conflict, counted
		c, err = p.claim(ctx, rl, n)
	}
	return c, err
}

// processClaim claims up to n messages (n runs can start at once), runs them, records
// their outcomes and returns how many it claimed. Each outcome is recorded as its run ends
// (with the others that ended meanwhile, in one completion), as a started processor's
// completer records them: leases are per consumer, and a quick consumer's message must not
// wait, claimed and unrecorded, for the slowest run of its claim, past its own lease.
func (p *Plugin) processClaim(ctx context.Context, rl string, n int) (int, error) {
	c, err := p.claimRetrying(ctx, rl, n)
	if err != nil {
		err = p.wrapDBError("claim messages", err)
	}
	p.counters.batch(len(c.rows), err)
	if err != nil {
		return 0, err
	}
	if len(c.rows) == 0 {
		return 0, nil
	}
	in := make(chan outcome, len(c.rows)) // each run reports once: never blocks
	runs := p.newRuns(ctx, &c, func(o outcome) {
		if o.limit != nil {
			o.limit.release(1)
		}
		in <- o
	})
	for i := range runs {
		go runs[i].execute()
	}
	settleCtx := context.WithoutCancel(ctx)
	var firstErr error
	batch := make([]outcome, 0, len(c.rows))
	for left := len(c.rows); left > 0; left -= len(batch) {
		batch = append(batch[:0], <-in)
	drain:
		for len(batch) < left {
			select {
			case o := <-in:
				batch = append(batch, o)
			default:
				break drain
			}
		}
		if err := p.settle(settleCtx, batch); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return len(c.rows), firstErr
}
