package asyncmonolith

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/asyncmonolith/asyncmonolith/internal/dialect"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// One claimed message's run, on a goroutine of its own: check the consumer's breaker,
// call the consumer under its timeout (a panic becomes a *PanicError), then settle — a
// success whose consumer used Message.Tx completes in that transaction at once, anything
// else is handed to the completer as an outcome. A consumer that outlives its timeout and
// then AbandonGrace (it ignores its context) is abandoned: its run is recorded as a
// timeout, its Message.Tx is closed, and its slot is freed while its goroutine is left
// behind.

// outcome is what one run decided, for the completer.
type outcome struct {
	row     *ConsumerMessage
	locator string
	lease   int64
	info    MessageInfo
	ctx     context.Context // the consumer's context as BeforeConsume returned it
	err     error
	took    time.Duration
	// done is set when the run's completion is recorded already (a Message.Tx success);
	// the completer only reports it.
	done bool
	// release is set when the run was cut short by a hard stop: the message is due again
	// at once, without an attempt counted.
	release bool
	// setAside is set (and nothing ran) when the consumer's breaker is open: the message
	// is moved to this time without counting an attempt.
	setAside time.Time
	tripped  time.Time // this run tripped the consumer's breaker until then
	limit    *limiter  // the WithConcurrency slot the run holds until it reports, or nil

	// Decided by the run, for a failure (decideRetry), so that a retry policy that blocks
	// holds up its own run, not the completer.
	decided   bool
	snoozed   bool          // the consumer snoozed the message, and the snooze was granted
	delay     time.Duration // the retry policy's wait before the next attempt
	notBefore time.Time     // the earliest a retry may be due (a snooze refused by its bound)

	// Decided by the completer.
	poisoned bool
	retryAt  time.Time // when a retried or snoozed message is due again
}

// run states: a run ends once, by its consumer returning or by being abandoned.
const (
	runRunning int32 = iota
	runEnded
)

// run is one message's run.
type run struct {
	p       *Plugin
	o       outcome
	reg     *registration
	env     envelope
	mtx     *messageTx      // Message.Tx's connection (from the claim's slab)
	txDB    *gorm.DB        // Message.Tx itself
	txStmt  *gorm.Statement // its statement
	msgCtx  context.Context
	cancel  context.CancelFunc
	workCtx context.Context // the processor's: done at a hard stop
	timeout time.Duration
	leased  time.Duration // the lease the claim gave the message
	plan    *leasePlan    // the claim's: the consumers it knew
	start   time.Time
	state   atomic.Int32
	grace   atomic.Pointer[graceTimer] // the AbandonGrace timer, once the context ended
	report  func(outcome)              // hands the outcome on and frees the run's slot; called once
}

// graceTimer holds a run's AbandonGrace timer.
type graceTimer struct{ t Timer }

// newRuns makes the runs of claim c, in one allocation, each handing its outcome to report.
func (p *Plugin) newRuns(workCtx context.Context, c *claimed, report func(outcome)) []run {
	runs := make([]run, len(c.rows))
	mtxs, dbs, stmts := make([]messageTx, len(runs)), make([]gorm.DB, len(runs)), make([]gorm.Statement, len(runs))
	for i := range runs {
		r := &runs[i]
		r.p, r.workCtx, r.report = p, workCtx, report
		r.mtx, r.txDB, r.txStmt = &mtxs[i], &dbs[i], &stmts[i]
		r.o = outcome{row: &c.rows[i], locator: c.locators[i], lease: c.leases[i], ctx: workCtx}
		if c.limits != nil {
			r.o.limit = c.limits[i]
		}
		r.leased, r.plan = c.plan.lease(c.rows[i].ConsumerType), c.plan
	}
	return runs
}

// workers run a processor's runs on goroutines that outlive one run: a goroutine made for
// every message spent a tenth of a no-op message's CPU growing its stack again.
type workers struct {
	ch   chan *run     // unbuffered: a send succeeds only when a worker is idle
	done chan struct{} // closed when the processor stops: idle workers exit
}

// workerIdle is how long an idle worker waits for another run before it exits.
const workerIdle = 10 * time.Second

func newWorkers() *workers { return &workers{ch: make(chan *run), done: make(chan struct{})} }

// start runs r on an idle worker, or on a new one.
func (w *workers) start(r *run) {
	select {
	case w.ch <- r:
	default:
		go w.loop(r)
	}
}

func (w *workers) loop(r *run) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		r.execute()
		idle.Reset(workerIdle)
		select {
		case r = <-w.ch:
		case <-idle.C:
			return
		case <-w.done:
			return
		}
	}
}

// stop lets idle workers exit.
func (w *workers) stop() { close(w.done) }

func (r *run) execute() {
	p := r.p
	row := r.o.row
	if until := p.breaker.PausedUntil(row.ConsumerType, p.now()); !until.IsZero() {
		r.o.setAside = until
		r.report(r.o)
		return
	}
	if r.workCtx.Err() != nil {
		// A hard stop came before the run began (its claim runs to its end, see claim): the
		// consumer is not started on a context already done; the message is due again at
		// once, without an attempt counted.
		r.o.release = true
		r.report(r.o)
		return
	}
	if !r.prepare() {
		if r.o.err != nil {
			// An unknown consumer's failure: its retry policy (Config.RetryPolicy) is asked
			// here too, not on the completer.
			p.decideRetry(&r.o, p.now())
		}
		r.report(r.o)
		return
	}
	stopWatch := context.AfterFunc(r.msgCtx, r.watch)
	err := r.invoke()
	stopWatch()
	if !r.state.CompareAndSwap(runRunning, runEnded) {
		r.cancel() // abandoned: its outcome was reported already
		return
	}
	r.stopGrace()
	r.report(r.conclude(err, false))
}

// stopGrace stops the run's AbandonGrace timer, if watch set one: the consumer returned.
func (r *run) stopGrace() {
	if g := r.grace.Load(); g != nil && g.t != nil { // a user Clock may return no timer
		g.t.Stop()
	}
}

// watch runs when the consumer's context ends (its timeout, or a hard stop): a consumer
// still running AbandonGrace later is abandoned.
func (r *run) watch() {
	if r.state.Load() != runRunning {
		return // the consumer returned already
	}
	t := r.p.cfg.Clock.AfterFunc(r.p.cfg.AbandonGrace, func() {
		if !r.state.CompareAndSwap(runRunning, runEnded) {
			return
		}
		r.mtx.abandon()
		p := r.p
		p.cfg.Logger.ErrorContext(r.o.ctx, "asyncmonolith: consumer ignored its cancelled context and was abandoned",
			"message_id", r.o.row.ID, "consumer", r.o.row.ConsumerType, "timeout", r.timeout)
		r.report(r.conclude(fmt.Errorf("%w after %s; it ignored its context and was abandoned (still running)", ErrConsumerTimeout, r.timeout), true))
	})
	r.grace.Store(&graceTimer{t})
	if r.state.Load() != runRunning {
		r.stopGrace() // the consumer returned while the timer was being set: execute may not have seen it
	}
}

// prepare sets the run up: its consumer, limits, context and Message.Tx. When the message
// cannot run (its consumer is unknown here), it returns false and r.o is its outcome.
func (r *run) prepare() bool {
	p := r.p
	cfg := p.cfg
	row := r.o.row
	attempt := max(row.Attempts, 0)
	if attempt < math.MaxInt { // a count written by hand at the column's largest value must not wrap around
		attempt++
	}
	reg, known := p.registry.consumer(row.ConsumerType)
	maxAttempts, timeout := cfg.MaxAttempts, cfg.ConsumerTimeout
	if known && reg.attempts > 0 {
		maxAttempts = reg.attempts
	}
	if known && reg.timeout > 0 {
		timeout = reg.timeout
	}
	if known && timeout+cfg.AbandonGrace+max(cfg.LeaseMargin, leaseMarginMin) > r.leased {
		// Registered after the claim, which leased the message as a type unknown here: a
		// run would outlive its lease (another processor would run the message meanwhile,
		// and fencing refuse this run's completion). It goes back at once, no attempt
		// counted, to be claimed under a lease that covers its timeout.
		r.o.release = true
		return false
	}
	if known && reg.limit != nil && r.o.limit == nil {
		if _, planned := r.plan.snap.byConsumer[row.ConsumerType]; !planned {
			// Registered WithConcurrency after the claim, which took the message without
			// its limit: the run takes a slot (given back when it reports) or, with none
			// free, the message goes back at once, no attempt counted, to be claimed within
			// the limit. (A consumer the claim knew, claimed without a slot, is on another
			// rail than its stored message's: that rail runs it unlimited.)
			if reg.limit.reserve(1) == 0 {
				r.o.release = true
				return false
			}
			r.o.limit = reg.limit
		}
	}
	r.reg, r.timeout = reg, timeout
	r.o.info = MessageInfo{
		ID: row.ID, InsertID: row.InsertID, ConsumerType: row.ConsumerType, PayloadType: row.PayloadType,
		Attempt: attempt, MaxAttempts: maxAttempts, Snoozes: row.Snoozes,
		CreatedAt: time.UnixMilli(row.CreatedAt), Due: time.UnixMilli(row.AvailableAfter),
	}
	if row.TraceID != nil {
		r.o.info.TraceID = *row.TraceID
	}
	if row.SpanID != nil {
		r.o.info.SpanID = *row.SpanID
	}
	if !known {
		r.o.err = fmt.Errorf("%w: %q (register it with asyncmonolith.Register)", ErrUnknownConsumer, row.ConsumerType)
		return false
	}
	ctx := r.workCtx
	if p.cfg.Hooks.BeforeConsume != nil {
		ctx = p.beforeConsume(ctx, r.o.info)
		r.o.ctx = ctx
	}
	r.start = p.now()
	deadline := r.start.Add(timeout)
	r.msgCtx, r.cancel = withDeadline(p.cfg.Clock, ctx, deadline)
	r.mtx.p, r.mtx.parent, r.mtx.deadline = p, r.workCtx, deadline.Add(cfg.AbandonGrace+max(cfg.LeaseMargin, leaseMarginMin))
	r.env = envelope{row: row, attempt: attempt, maxAttempts: maxAttempts, tx: messageDB(p.db, r.mtx, r.msgCtx, r.txDB, r.txStmt)}
	return true
}

// invoke calls the consumer, turning a panic into a *PanicError, and an error that panics
// when inspected into one that does not.
func (r *run) invoke() (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return inspectable(r.reg.run(r.msgCtx, r.env))
}

// conclude turns a finished (or abandoned) run into its outcome: it names timeouts, logs
// panics, ends Message.Tx (committing it with the completion on success) and feeds the
// consumer's breaker.
func (r *run) conclude(err error, abandoned bool) outcome {
	p := r.p
	defer r.cancel()
	o := r.o
	o.took = r.p.now().Sub(r.start)
	row := o.row
	stopped := r.workCtx.Err() != nil
	if err != nil && !errors.Is(err, ErrConsumerTimeout) && errors.Is(r.msgCtx.Err(), context.DeadlineExceeded) && !stopped {
		err = fmt.Errorf("%w after %s: %w", ErrConsumerTimeout, r.timeout, err)
	}
	if pe := (*PanicError)(nil); errors.As(err, &pe) {
		p.cfg.Logger.ErrorContext(o.ctx, "asyncmonolith: consumer panicked", "message_id", row.ID, "consumer", row.ConsumerType,
			"panic", fmt.Sprint(pe.Value), "stack", string(pe.Stack))
	}
	timedOut := errors.Is(err, ErrConsumerTimeout)
	lost := false
	switch {
	case abandoned:
		// Message.Tx was closed already; the stuck consumer may hold its lock.
	case err == nil && r.mtx.begun():
		err = r.mtx.finish(o.lease, o.locator)
		if err == nil || errors.Is(err, ErrLeaseLost) {
			o.done = true // recorded, or nothing left to record: the message is another run's now
			o.err = err
			p.recordRun(row.ConsumerType, nil)
			return o
		}
		// A deadlock or a lost connection at the completion: a conflict, not the
		// consumer's failure (its writes were rolled back; it runs again).
		lost = dialect.Unavailable(err) || p.dialect.Retryable(err)
	default:
		lost = r.mtx.rollback()
	}
	o.err = err
	if errors.Is(err, errNoTxSlot) && !stopped {
		// The plugin's own limit kept the consumer from its Message.Tx until its timeout:
		// backpressure, not the consumer's failure.
		p.cfg.Logger.WarnContext(o.ctx, "asyncmonolith: a consumer's Message.Tx waited for a free slot until its timeout; the message is due again without an attempt counted (raise Config.MaxMessageTxs, with the pool's limit)",
			"message_id", row.ID, "consumer", row.ConsumerType, "max_message_txs", p.cfg.MaxMessageTxs)
		o.release = true
		return o
	}
	if err != nil && (stopped || (lost && !timedOut)) {
		// A hard stop cut the run short, or the database went away under its Message.Tx:
		// that says nothing about the consumer, and the message is due again at once,
		// without an attempt counted. (A statement that outlived the consumer's timeout
		// also loses its connection, but that is the consumer's failure.)
		o.release = true
		return o
	}
	until, recovered := p.recordRun(row.ConsumerType, err)
	switch {
	case !until.IsZero():
		o.tripped = until
		p.cfg.Logger.WarnContext(o.ctx, "asyncmonolith: consumer keeps failing; its messages are set aside until a probe succeeds",
			"consumer", row.ConsumerType, "paused_until", until, "error", err)
	case recovered:
		p.cfg.Logger.InfoContext(o.ctx, "asyncmonolith: paused consumer succeeded again; resumed", "consumer", row.ConsumerType)
	}
	if err != nil {
		p.decideRetry(&o, p.now())
	}
	return o
}

// messageDB is a Message.Tx: a new-statement session (as Session(&gorm.Session{NewDB:
// true}) makes) of base, on conn, with ctx. A *gorm.DB whose clone mode is "new statement"
// gives every chained call a fresh Statement holding only its template's ConnPool,
// Context, SkipHooks and Unscoped, so the template needs nothing else: building it
// directly costs a third of what Session with a Context does.
func messageDB(base *gorm.DB, conn gorm.ConnPool, ctx context.Context, db *gorm.DB, stmt *gorm.Statement) *gorm.DB {
	*db = *base // shares base's Config, as every chained call does
	*stmt = gorm.Statement{DB: db, ConnPool: conn, Context: ctx, Clauses: map[string]clause.Clause{},
		SkipHooks: base.Statement.SkipHooks, Unscoped: base.Statement.Unscoped}
	db.Statement = stmt
	return db
}
