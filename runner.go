package asyncmonolith

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// A batch's consumers run one after another on one goroutine of the batch's own (its
// runner), each called directly: no goroutine or channel hand-off per message, which cost
// about as much as the rest of a no-op message's processing together. The processor's
// goroutine only watches the clock: a consumer that outlives its timeout and then
// AbandonGrace (it ignores its context) is abandoned — its Message.Tx closed, its run
// recorded as a timeout — and a fresh runner goes on with the next message while the stuck
// one is left behind.

// batchRun is the state of one batch's runs, shared by its runner and the processor.
type batchRun struct {
	pr       *processor
	workCtx  context.Context
	tx       *gorm.DB
	msgBase  *gorm.DB // a new-statement session of tx: the template of each Message.Tx
	rows     []ConsumerMessage
	locators []string
	now      time.Time // the batch's clock reading for breaker checks

	mu        sync.Mutex
	outcomes  []outcome // outcomes[:next] are final
	next      int       // the message running, or to run next
	gen       int       // the current runner; a runner of an older generation exits
	seq       int       // counts consumer starts, so the watcher knows one run from the next
	cur       *inflight // the consumer running now, or nil
	stop      error     // why the batch cannot go on (then it rolls back)
	paused    map[string]time.Time
	setAsides int
	done      chan struct{} // closed when no runner will record another outcome
	buf       *batchBuffers
	txs       []txSlot // txs[i] is message i's Message.Tx
}

// batchBuffers is the memory of one batch that nothing outside the library can reach once
// the batch is over: its rows, their locators, its runs and outcomes. They are reused
// from batch to batch (unless a run was abandoned: a stuck consumer still points into
// them), so a message costs the collector little beyond its column values, context and
// payload. Allocations and the collection they cause were most of a no-op message's CPU.
// The plugin keeps them in a sync.Pool (ProcessBatch may run on many goroutines at once).
type batchBuffers struct {
	rows     []ConsumerMessage
	locators []string
	runs     []inflight
	outcomes []outcome
	deleted  []string
}

// reset drops what the last batch left, so that reused buffers keep nothing alive.
func (b *batchBuffers) reset() {
	clear(b.rows[:cap(b.rows)])
	clear(b.locators[:cap(b.locators)])
	clear(b.runs)
	clear(b.outcomes[:cap(b.outcomes)])
	clear(b.deleted[:cap(b.deleted)])
	b.rows, b.locators, b.outcomes, b.deleted = b.rows[:0], b.locators[:0], b.outcomes[:0], b.deleted[:0]
}

// txSlot is what one message's Message.Tx is made of. A batch allocates them at once (one
// allocation instead of three per message) and never reuses them: a consumer may keep its
// Message.Tx after its run, and that handle must go on refusing work, not reach another
// message's savepoint.
type txSlot struct {
	conn lazyTx
	db   gorm.DB
	stmt gorm.Statement
}

// inflight is one consumer run between its start and its outcome.
type inflight struct {
	o        outcome
	reg      *registration
	env      envelope
	conn     *lazyTx
	msgCtx   context.Context
	cancel   context.CancelFunc
	timeout  time.Duration
	deadline time.Time
	start    time.Time
	workCtx  context.Context // the processor's: done at a hard stop
	txCtx    context.Context // the batch transaction's, for ending the savepoint
}

func newBatchRun(pr *processor, workCtx context.Context, tx *gorm.DB, buf *batchBuffers) *batchRun {
	n := len(buf.rows)
	if cap(buf.runs) < n {
		buf.runs = make([]inflight, n)
	}
	if cap(buf.outcomes) < n {
		buf.outcomes = make([]outcome, 0, n)
	}
	return &batchRun{pr: pr, workCtx: workCtx, tx: tx, msgBase: tx.Session(&gorm.Session{NewDB: true}), rows: buf.rows,
		locators: buf.locators, now: pr.p.now(), outcomes: buf.outcomes[:0], done: make(chan struct{}),
		buf: buf, txs: make([]txSlot, n)}
}

// reusable reports whether the batch's buffers can serve another batch: no run of it was
// abandoned (the abandoned consumer's runner still holds them).
func (br *batchRun) reusable() bool {
	br.mu.Lock()
	defer br.mu.Unlock()
	return br.gen == 0
}

// runAll runs every message of the batch (until one leaves the transaction unusable or a
// hard stop) and returns the outcomes so far and the reason it stopped early, if any.
func (br *batchRun) runAll() ([]outcome, error) {
	go br.runFrom(0)
	br.watch()
	br.mu.Lock()
	defer br.mu.Unlock()
	return br.outcomes, br.stop
}

// runFrom is a runner of generation g: it runs messages from br.next on until the batch
// is over or the processor abandoned this runner.
func (br *batchRun) runFrom(g int) {
	p := br.pr.p
	for {
		br.mu.Lock()
		if br.gen != g {
			br.mu.Unlock()
			return
		}
		i := br.next
		if i == len(br.rows) || br.stop != nil {
			close(br.done)
			br.mu.Unlock()
			return
		}
		br.mu.Unlock()

		row := &br.rows[i]
		if until := p.breaker.pausedUntil(row.ConsumerType, br.now); !until.IsZero() {
			br.record(g, outcome{row: row, setAside: until}, true)
			continue
		}
		in := &br.buf.runs[i]
		if !br.pr.prepare(br.workCtx, br.tx, br.msgBase, row, in, &br.txs[i]) {
			br.record(g, in.o, true)
			continue
		}
		br.mu.Lock()
		if br.gen != g {
			br.mu.Unlock()
			in.cancel()
			return
		}
		br.seq++
		br.cur = in
		br.mu.Unlock()

		err := in.invoke()

		br.mu.Lock()
		abandoned := br.gen != g
		if !abandoned {
			br.cur = nil
		}
		br.mu.Unlock()
		if abandoned { // the processor recorded this run as a timeout and went on
			in.cancel()
			return
		}
		o, usable := br.pr.conclude(in, err)
		br.record(g, o, usable)
	}
}

// record stores the outcome of message br.next, for runner generation g.
func (br *batchRun) record(g int, o outcome, usable bool) {
	br.mu.Lock()
	defer br.mu.Unlock()
	if br.gen != g {
		return
	}
	br.recordLocked(o, usable)
}

func (br *batchRun) recordLocked(o outcome, usable bool) {
	i := br.next
	o.locator = br.locators[i]
	br.outcomes = append(br.outcomes, o)
	br.next++
	switch {
	case !o.setAside.IsZero():
		br.setAsides++
		if br.setAsides == len(br.rows)/2+1 { // a backlog: set it aside in bulk too
			br.paused = withPaused(br.paused, o.row.ConsumerType, o.setAside)
		}
	case !o.tripped.IsZero():
		br.paused = withPaused(br.paused, o.row.ConsumerType, o.tripped)
	}
	switch {
	case br.workCtx.Err() != nil:
		// Hard stop: the batch rolls back and its messages run again later, without
		// counting an attempt.
		br.stop = fmt.Errorf("asyncmonolith: batch abandoned: %w", br.workCtx.Err())
	case !usable && br.pr.p.dialect.Retryable(o.err):
		// A deadlock in the consumer's statements aborted the whole transaction (InnoDB):
		// retry the batch at once, as for any conflict.
		br.stop = fmt.Errorf("asyncmonolith: consumer %s hit a conflict that aborted the batch: %w: %w", o.row.ConsumerType, ErrRetryable, o.err)
	case !usable:
		br.stop = fmt.Errorf("asyncmonolith: consumer %s left the batch transaction unusable: %w", o.row.ConsumerType, o.err)
	}
}

// watch waits until the batch's runs are over, abandoning any consumer that outlives its
// context (its timeout, or a hard stop) by AbandonGrace.
func (br *batchRun) watch() {
	grace := br.pr.p.cfg.AbandonGrace
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	stopping := br.workCtx.Done()
	var stoppedAt time.Time
	for {
		br.mu.Lock()
		cur, seq := br.cur, br.seq
		br.mu.Unlock()
		wait := grace // between runs: look again shortly
		if cur != nil {
			end := cur.deadline
			if !stoppedAt.IsZero() && stoppedAt.Before(end) {
				end = stoppedAt
			}
			wait = time.Until(end.Add(grace))
		}
		if wait <= 0 {
			br.abandon(seq)
			continue
		}
		timer.Reset(wait)
		select {
		case <-br.done:
			return
		case <-stopping:
			stopping, stoppedAt = nil, time.Now()
		case <-timer.C:
		}
	}
}

// abandon gives up on the consumer of run seq if it is still running: its Message.Tx is
// closed, its run recorded as a timeout, and a new runner goes on with the next message.
func (br *batchRun) abandon(seq int) {
	br.mu.Lock()
	in := br.cur
	if in == nil || br.seq != seq {
		br.mu.Unlock()
		return
	}
	br.gen++
	br.cur = nil
	g := br.gen
	br.mu.Unlock()

	in.conn.abandon()
	p := br.pr.p
	err := fmt.Errorf("%w after %s; it ignored its context and was abandoned (still running)", ErrConsumerTimeout, in.timeout)
	p.log.ErrorContext(in.o.ctx, "asyncmonolith: consumer ignored its cancelled context and was abandoned",
		"message_id", in.o.row.ID, "consumer", in.o.row.ConsumerType, "timeout", in.timeout)
	o, usable := br.pr.conclude(in, err)
	br.mu.Lock()
	br.recordLocked(o, usable)
	br.mu.Unlock()
	go br.runFrom(g)
}

// prepare sets up in, one message's run inside tx, isolated by a lazy savepoint, with its
// Message.Tx made of slot. When the message cannot run (its consumer is unknown here), it
// returns false and in.o is its outcome.
func (pr *processor) prepare(workCtx context.Context, tx, msgBase *gorm.DB, row *ConsumerMessage, in *inflight, slot *txSlot) bool {
	p := pr.p
	cfg := p.cfg
	attempt := max(row.Attempts, 0) + 1
	reg, known := p.registry.consumer(row.ConsumerType)
	maxAttempts, timeout := cfg.MaxAttempts, cfg.DefaultConsumerTimeout
	if known && reg.attempts > 0 {
		maxAttempts = reg.attempts
	}
	if known && reg.timeout > 0 {
		timeout = reg.timeout
	}
	*in = inflight{reg: reg, timeout: timeout, workCtx: workCtx, txCtx: tx.Statement.Context, cancel: func() {}}
	in.o = outcome{row: row, ctx: workCtx, info: MessageInfo{
		ID: row.ID, InsertID: row.InsertID, ConsumerType: row.ConsumerType, PayloadType: row.PayloadType,
		Attempt: attempt, MaxAttempts: maxAttempts,
		CreatedAt: time.UnixMilli(row.CreatedAt), Due: time.UnixMilli(row.AvailableAfter),
	}}
	if row.TraceID != nil {
		in.o.info.TraceID = *row.TraceID
	}
	if row.SpanID != nil {
		in.o.info.SpanID = *row.SpanID
	}
	if !known {
		in.o.err = fmt.Errorf("%w: %q (register it with asyncmonolith.Register)", ErrUnknownConsumer, row.ConsumerType)
		return false
	}
	ctx := workCtx
	if p.hooks.BeforeConsume != nil {
		ctx = p.hooks.BeforeConsume(ctx, in.o.info)
		in.o.ctx = ctx
	}
	in.start = time.Now()
	in.deadline = in.start.Add(timeout)
	in.msgCtx, in.cancel = context.WithDeadline(ctx, in.deadline)
	slot.conn.conn = tx.Statement.ConnPool
	in.conn = &slot.conn
	in.env = envelope{row: row, attempt: attempt, maxAttempts: maxAttempts, tx: messageTx(msgBase, in.conn, in.msgCtx, &slot.db, &slot.stmt)}
	return true
}

// invoke calls the consumer, turning a panic into a *PanicError.
func (in *inflight) invoke() (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return in.reg.run(in.msgCtx, in.env)
}

// conclude turns a finished (or abandoned) run into its outcome: it names timeouts, logs
// panics, ends the savepoint and feeds the consumer's breaker. The second result is false
// when the batch transaction can no longer be used.
func (pr *processor) conclude(in *inflight, err error) (outcome, bool) {
	p := pr.p
	defer in.cancel()
	o := in.o
	o.took = time.Since(in.start)
	row := o.row
	if err != nil && !errors.Is(err, ErrConsumerTimeout) && errors.Is(in.msgCtx.Err(), context.DeadlineExceeded) && in.workCtx.Err() == nil {
		err = fmt.Errorf("%w after %s: %w", ErrConsumerTimeout, in.timeout, err)
	}
	if err != nil {
		if pe := (*PanicError)(nil); errors.As(err, &pe) {
			p.log.ErrorContext(o.ctx, "asyncmonolith: consumer panicked", "message_id", row.ID, "consumer", row.ConsumerType,
				"panic", fmt.Sprint(pe.Value), "stack", string(pe.Stack))
		}
	}
	err, usable := in.conn.settle(in.txCtx, err)
	o.err = err
	if !usable {
		// The batch transaction failed under the consumer (a lost connection, a database
		// restart): that says nothing about the consumer, and the batch will run again.
		return o, false
	}
	until, recovered := p.breaker.record(row.ConsumerType, err, p.now())
	switch {
	case !until.IsZero():
		o.tripped = until
		p.log.WarnContext(o.ctx, "asyncmonolith: consumer keeps failing; its messages are set aside until a probe succeeds",
			"consumer", row.ConsumerType, "paused_until", until, "error", err)
	case recovered:
		p.log.InfoContext(o.ctx, "asyncmonolith: paused consumer succeeded again; resumed", "consumer", row.ConsumerType)
	}
	return o, usable
}

// messageTx makes db, with stmt as its Statement, a Message.Tx: a new-statement session (as
// Session(&gorm.Session{NewDB: true}) makes) of base, on conn, with ctx. A *gorm.DB whose
// clone mode is "new statement" gives every chained call a fresh Statement holding only its
// template's ConnPool, Context, SkipHooks and Unscoped, so the template needs nothing else:
// building it directly costs a third of what Session with a Context does (a copy of the
// Config and a clone of the batch's Statement), for every message.
func messageTx(base *gorm.DB, conn gorm.ConnPool, ctx context.Context, db *gorm.DB, stmt *gorm.Statement) *gorm.DB {
	*db = *base // shares base's Config, as every chained call does
	*stmt = gorm.Statement{DB: db, ConnPool: conn, Context: ctx, Clauses: map[string]clause.Clause{},
		SkipHooks: base.Statement.SkipHooks, Unscoped: base.Statement.Unscoped}
	db.Statement = stmt
	return db
}
