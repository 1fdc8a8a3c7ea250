package asyncmonolith

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// skipLocked is the fetch's row lock: rows another processor holds are skipped, so any
// number of processors, in any number of processes, share the queue. GORM's SQLite
// dialect drops it (SQLite has no row locks), which is why SQLite allows one processor.
var skipLocked = clause.Locking{Strength: "UPDATE", Options: "SKIP LOCKED"}

// fetchOrder serves the index idx_consumer_messages_fetch, so a locking read stops after
// the batch instead of locking (or, on InnoDB, scanning) every due row.
const fetchOrder = "available_after, created_at, id"

// maxErrorLen bounds the error text stored on a message.
const maxErrorLen = 4000

// processor is one consumer-processing loop: fetch a batch with row locks, run each
// message's consumer in the batch's transaction, record outcomes, commit.
type processor struct {
	p      *Plugin
	index  int
	wakeCh chan struct{}
}

// wakeFollowUps is how many quick re-polls follow a wake that found nothing: a message
// produced in a caller's transaction wakes the processors before that transaction commits.
const wakeFollowUps = 6

func (pr *processor) loop(fetchCtx, workCtx context.Context) {
	// Each processor's consumer contexts hang off a context of its own, so that processors
	// do not contend for one parent's lock as they create and cancel them.
	workCtx, cancel := context.WithCancel(workCtx)
	defer cancel()
	cfg := pr.p.cfg
	log := pr.p.log.With("processor", pr.index)
	// A staggered start keeps processors from polling in lockstep.
	delay := time.Duration(rand.Int64N(int64(cfg.ProcessorMinDelay) + 1))
	followUps, failures := 0, 0
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for {
		select {
		case <-fetchCtx.Done():
			return
		case <-pr.wakeCh:
			followUps = wakeFollowUps
		case <-timer.C:
		}
		n, err := pr.batch(workCtx)
		switch {
		case fetchCtx.Err() != nil:
			return
		case err != nil && errors.Is(err, ErrRetryable):
			failures = 0
			delay = time.Duration(rand.Int64N(int64(5 * time.Millisecond))) // contention: retry at once
			log.DebugContext(workCtx, "asyncmonolith: batch hit a transient conflict; retrying", "error", err)
		case err != nil:
			failures++
			delay = backoff(failures, cfg.ProcessorMinDelay, cfg.ProcessorMaxDelay)
			log.ErrorContext(workCtx, "asyncmonolith: consumer batch failed", "error", err, "retry_in", delay)
		case n == cfg.ProcessorBatchSize:
			failures = 0
			delay = cfg.ProcessorMinDelay
		case n == 0 && followUps > 0:
			delay = time.Millisecond << (wakeFollowUps - followUps)
			followUps--
		default:
			failures = 0
			followUps = 0
			delay = jitter(cfg.ProcessorMaxDelay)
		}
		timer.Reset(delay)
	}
}

// backoff grows from min towards max with consecutive failures (a database that is down).
func backoff(failures int, lo, hi time.Duration) time.Duration {
	d := max(lo, 10*time.Millisecond)
	for i := 1; i < failures && d < hi; i++ {
		d *= 2
	}
	return jitter(min(d, hi))
}

// outcome is what one run decided.
type outcome struct {
	row      *ConsumerMessage
	info     MessageInfo
	ctx      context.Context
	err      error
	took     time.Duration
	poisoned bool
	retryAt  time.Time
	locator  string // finds the row again for the delete (dialect.Locator)
	// setAside is set (and nothing ran) when the consumer's breaker is open: the message
	// is moved to this time without counting an attempt.
	setAside time.Time
	tripped  time.Time // this run tripped the consumer's breaker until then
}

// batch processes one batch and returns how many messages it fetched.
func (pr *processor) batch(workCtx context.Context) (n int, err error) {
	p := pr.p
	defer func() { p.counters.batch(n, err) }()
	tx := p.db.WithContext(workCtx).Begin(p.dialect.ProcessorTxOptions())
	if tx.Error != nil {
		return 0, p.wrapDBError("begin batch", tx.Error)
	}
	done := false
	defer func() {
		if !done {
			tx.Rollback()
		}
	}()
	buf, _ := p.buffers.Get().(*batchBuffers)
	if buf == nil {
		buf = &batchBuffers{}
	}
	buf.rows, buf.locators, err = p.fetch(workCtx, tx.Statement.ConnPool, p.now().UnixMilli(), buf.rows[:0], buf.locators[:0])
	if err != nil {
		return 0, p.wrapDBError("fetch batch", err)
	}
	rows := buf.rows
	if len(rows) == 0 {
		p.buffers.Put(buf)
		return 0, nil
	}
	committed, batchErr := false, error(nil)
	br := newBatchRun(pr, workCtx, tx, buf)
	defer func() { // after the AfterConsume hooks (deferred below) have run
		if br.reusable() {
			buf.reset()
			p.buffers.Put(buf)
		}
	}()
	if p.hooks.AfterConsume != nil {
		// Every run that started is reported once: with its outcome once the batch
		// committed, or with the batch's error when the batch rolled back (the message
		// then runs again later).
		defer func() {
			br.mu.Lock()
			outcomes := br.outcomes
			br.mu.Unlock()
			for _, o := range outcomes {
				if !o.setAside.IsZero() {
					continue // did not run
				}
				r := Result{Err: o.err, Duration: o.took, Poisoned: o.poisoned, RetryAt: o.retryAt}
				if !committed {
					r = Result{Err: fmt.Errorf("batch rolled back: %w", batchErr), Duration: o.took}
				}
				p.hooks.AfterConsume(o.ctx, o.info, r)
			}
		}()
	}
	outcomes, stop := br.runAll()
	if stop != nil {
		batchErr = stop
		return len(rows), batchErr
	}
	if err := pr.complete(tx, outcomes, buf); err != nil {
		batchErr = err
		return len(rows), err
	}
	done = true
	if err := tx.Commit().Error; err != nil {
		batchErr = p.wrapDBError("commit batch", err)
		return len(rows), batchErr
	}
	committed = true
	p.counters.completed(outcomes)
	for consumerType, until := range br.paused {
		n, err := p.setAside(workCtx, consumerType, until)
		if err != nil {
			p.log.WarnContext(workCtx, "asyncmonolith: could not set aside a paused consumer's messages; batches will as they meet them",
				"consumer", consumerType, "error", err)
			continue
		}
		p.log.DebugContext(workCtx, "asyncmonolith: set aside a paused consumer's messages", "consumer", consumerType, "messages", n, "until", until)
		p.counters.setAside.Add(uint64(n))
	}
	return len(rows), nil
}

func withPaused(m map[string]time.Time, consumerType string, until time.Time) map[string]time.Time {
	if m == nil {
		m = map[string]time.Time{}
	}
	m[consumerType] = until
	return m
}

// complete records each outcome in tx: successes and poisoned messages are deleted,
// poisoned ones copied to poisoned_messages, failures rescheduled.
func (pr *processor) complete(tx *gorm.DB, outcomes []outcome, buf *batchBuffers) error {
	p := pr.p
	cfg := p.cfg
	now := p.now()
	deleted := buf.deleted[:0]
	defer func() { buf.deleted = deleted }()
	var poisoned []PoisonedMessage
	type retryKey struct {
		attempt int
		msg     string
	}
	retries := map[retryKey][]string{}
	var order []retryKey
	var asides map[int64][]string // by the time they are set aside until
	for i := range outcomes {
		o := &outcomes[i]
		if !o.setAside.IsZero() {
			if asides == nil {
				asides = map[int64][]string{}
			}
			asides[o.setAside.UnixMilli()] = append(asides[o.setAside.UnixMilli()], o.locator)
			continue
		}
		if o.err == nil {
			deleted = append(deleted, o.locator)
			continue
		}
		msg := o.err.Error()
		if len(msg) > maxErrorLen {
			msg = msg[:maxErrorLen]
		}
		log := p.log.With("message_id", o.row.ID, "consumer", o.row.ConsumerType, "attempt", o.info.Attempt,
			"max_attempts", o.info.MaxAttempts, "duration", o.took, "error", o.err)
		if o.info.Attempt >= o.info.MaxAttempts {
			o.poisoned = true
			deleted = append(deleted, o.locator)
			r := o.row
			poisoned = append(poisoned, PoisonedMessage{
				ID: r.ID, CreatedAt: r.CreatedAt, AvailableAfter: r.AvailableAfter, Attempts: o.info.Attempt,
				ConsumerType: r.ConsumerType, PayloadType: r.PayloadType, Payload: r.Payload, InsertID: r.InsertID,
				TraceID: r.TraceID, SpanID: r.SpanID, LastError: msg, PoisonedAt: now.UnixMilli(),
			})
			log.WarnContext(o.ctx, "asyncmonolith: message poisoned")
			continue
		}
		o.retryAt = now.Add(cfg.AttemptDelay)
		k := retryKey{o.info.Attempt, msg}
		if _, ok := retries[k]; !ok {
			order = append(order, k)
		}
		retries[k] = append(retries[k], o.locator)
		log.InfoContext(o.ctx, "asyncmonolith: consumer failed; will retry", slog.Time("retry_at", o.retryAt))
	}
	// One statement per distinct (attempt, error) in the batch: a storm of identical
	// failures costs one round trip per batch, not one per message.
	ctx, conn := tx.Statement.Context, tx.Statement.ConnPool
	for _, k := range order {
		err := p.updateLocated(ctx, conn, []string{"attempts", "available_after", "last_error"},
			[]any{k.attempt, now.Add(cfg.AttemptDelay).UnixMilli(), k.msg}, retries[k])
		if err != nil {
			return p.wrapDBError("reschedule failed messages", err)
		}
	}
	for until, locs := range asides {
		if err := p.updateLocated(ctx, conn, []string{"available_after"}, []any{until}, locs); err != nil {
			return p.wrapDBError("set aside a paused consumer's messages", err)
		}
	}
	if len(poisoned) > 0 {
		if err := tx.Session(&gorm.Session{SkipHooks: true}).CreateInBatches(&poisoned, insertBatchRows).Error; err != nil {
			return p.wrapDBError("poison messages", err)
		}
	}
	if len(deleted) > 0 {
		if err := p.deleteMessages(tx.Statement.Context, tx.Statement.ConnPool, deleted); err != nil {
			return p.wrapDBError("delete completed messages", err)
		}
	}
	return nil
}
