package asyncmonolith

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/asyncmonolith/asyncmonolith/internal/dialect"
	"github.com/asyncmonolith/asyncmonolith/internal/wake"
	"gorm.io/gorm"
)

// The completer records runs' outcomes: successes are deleted, failures rescheduled with
// their error (or, after the last attempt, moved to poisoned_messages), set-aside and
// released messages made pending again. Every statement is fenced by the claim's lease,
// so a run whose lease ended completes nothing (ErrLeaseLost). The outcomes that finished
// while the previous completion ran are recorded together, in one short transaction with
// one statement per kind: a burst of completions costs a few round trips, not one per
// message, and a slow run completes on its own, without holding up the others.
//
// A completion that the database refuses for a reason other than a conflict or a lost
// connection is retried one outcome per transaction, so that the outcome that makes it
// fail is found and set apart, and the others are recorded.

// maxErrorLen bounds the error text stored on a message, in bytes.
const maxErrorLen = 4000

// maxCompleteBatch bounds how many outcomes one completion records.
const maxCompleteBatch = 1000

// completeTimeout bounds one completion transaction.
const completeTimeout = 30 * time.Second

// storedError is err's text as the database will store it: valid UTF-8, no NUL bytes
// (PostgreSQL refuses both in text), at most maxErrorLen bytes, cut at a rune boundary.
func storedError(err error) string {
	s := errorText(err)
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "\\x00")
	}
	if len(s) > maxErrorLen {
		cut := maxErrorLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}

// completer records the outcomes of one processor's runs as they arrive.
type completer struct {
	p    *Plugin
	in   chan outcome
	done chan struct{}
}

func (p *Plugin) newCompleter(buffer int) *completer {
	c := &completer{p: p, in: make(chan outcome, buffer), done: make(chan struct{})}
	return c
}

// loop records outcomes until in is closed and drained. ctx is the processor's work
// context without its cancellation: outcomes are recorded even during a hard stop.
func (c *completer) loop(ctx context.Context) {
	defer close(c.done)
	batch := make([]outcome, 0, 64)
	for o := range c.in {
		batch = append(batch[:0], o)
	drain:
		for len(batch) < maxCompleteBatch {
			select {
			case o, ok := <-c.in:
				if !ok {
					break drain
				}
				batch = append(batch, o)
			default:
				break drain
			}
		}
		c.p.settle(ctx, batch)
		clear(batch)
	}
}

// settle records outcomes, then counts and reports them.
func (p *Plugin) settle(ctx context.Context, outcomes []outcome) error {
	err := p.record(ctx, outcomes)
	if err != nil {
		p.cfg.Logger.ErrorContext(ctx, "asyncmonolith: could not record outcomes; their messages run again when their lease ends",
			"messages", len(outcomes), "error", err)
	}
	recorded := err == nil
	p.counters.completed(outcomes, recorded)
	if p.cfg.Hooks.AfterConsume != nil {
		for i := range outcomes {
			o := &outcomes[i]
			if !o.setAside.IsZero() || o.info.Attempt == 0 {
				continue // did not run
			}
			r := Result{Err: o.err, Duration: o.took, Poisoned: o.poisoned, Snoozed: o.snoozed, RetryAt: o.retryAt}
			if !recorded && !o.done {
				r = Result{Err: fmt.Errorf("asyncmonolith: outcome not recorded (the message runs again): %w", err), Duration: o.took}
			}
			p.callHook(o.ctx, "AfterConsume", func() { p.cfg.Hooks.AfterConsume(o.ctx, o.info, r) })
		}
	}
	p.setAsideTripped(ctx, outcomes)
	return err
}

// setAsideTripped sets aside the backlog of each consumer whose breaker a run tripped.
func (p *Plugin) setAsideTripped(ctx context.Context, outcomes []outcome) {
	var seen map[string]bool
	for i := range outcomes {
		o := &outcomes[i]
		if o.tripped.IsZero() || seen[o.row.ConsumerType] {
			continue
		}
		if seen == nil {
			seen = map[string]bool{}
		}
		seen[o.row.ConsumerType] = true
		n, err := p.setAside(ctx, o.row.ConsumerType, o.tripped)
		if err != nil {
			p.cfg.Logger.WarnContext(ctx, "asyncmonolith: could not set aside a paused consumer's messages; claims will as they meet them",
				"consumer", o.row.ConsumerType, "error", err)
			continue
		}
		p.cfg.Logger.DebugContext(ctx, "asyncmonolith: set aside a paused consumer's messages", "consumer", o.row.ConsumerType, "messages", n, "until", o.tripped)
		p.counters.setAside.Add(uint64(n))
	}
}

// record writes outcomes: all at once, retried on conflicts and lost connections; one by
// one when the database refuses the batch otherwise.
func (p *Plugin) record(ctx context.Context, outcomes []outcome) error {
	now := p.now()
	plan := p.decide(outcomes, now)
	if plan.empty() {
		return nil
	}
	// A database that is down is waited for until the first lease ends (then the messages
	// are claimable again anyway), so that the outcomes land as soon as it is back.
	giveUp := plan.firstLease()
	var err error
	for attempt := 1; ; attempt++ {
		var short bool
		if plan.oneDelete() {
			// One statement is its own transaction: no BEGIN and COMMIT round trips.
			short, err = p.deleteAlone(ctx, plan)
			if err == nil {
				return nil
			}
		} else {
			short, err = p.inTx(ctx, func(tx *gorm.DB) (bool, error) { return p.write(tx, plan, now) })
		}
		if err == nil && !short {
			return nil
		}
		if err == nil || (!p.dialect.Retryable(err) && !isConnError(err)) {
			break // a lost lease, or a refusal: find which outcome
		}
		wait := wake.Backoff(attempt, 10*time.Millisecond, time.Second)
		if ctx.Err() != nil || p.now().Add(wait).UnixMilli() >= giveUp {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
	if err != nil {
		p.cfg.Logger.WarnContext(ctx, "asyncmonolith: recording a batch of outcomes failed; recording them one by one", "error", err)
	}
	for i := range plan.items {
		p.recordOne(ctx, &plan.items[i], now)
	}
	return nil
}

// inTx runs fn in a completion transaction, committed when fn succeeds and reports no
// short write.
func (p *Plugin) inTx(ctx context.Context, fn func(tx *gorm.DB) (bool, error)) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, completeTimeout)
	defer cancel()
	tx := p.db.WithContext(ctx).Begin(p.dialect.ProcessorTxOptions())
	if tx.Error != nil {
		return false, tx.Error
	}
	short, err := fn(tx)
	if err != nil || short {
		tx.Rollback()
		return short, err
	}
	return false, tx.Commit().Error
}

// isConnError reports an error that says the connection went away or timed out, not that
// a statement was refused.
func isConnError(err error) bool {
	return dialect.Unavailable(err) || !breakerCounts(err) || errors.Is(err, context.DeadlineExceeded)
}

// errorText is err.Error(), or, when that panics (a consumer returned a typed nil, such
// as a nil *MyError whose Error reads its receiver), a text that names the error's type:
// the consumer's mistake fails its run, not the process.
func errorText(err error) (s string) {
	defer func() {
		if v := recover(); v != nil {
			s = fmt.Sprintf("%T: its Error method panicked: %v", err, v)
		}
	}()
	return err.Error()
}

// recordOne writes one item in a transaction of its own, after its batch failed. An
// outcome that would make a second pending message for its insert id (one was produced
// while it ran) is superseded by that message and deleted; one that the database refuses
// otherwise is set apart — its attempt counted, with the refusal as its error — so that it
// cannot fail every completion it is part of.
func (p *Plugin) recordOne(ctx context.Context, it *item, now time.Time) {
	o := it.o
	pl := plan{items: []item{*it}}
	short, err := p.inTx(ctx, func(tx *gorm.DB) (bool, error) { return p.write(tx, pl, now) })
	switch {
	case err == nil && !short:
		return
	case err == nil:
		o.err = lostLease(o.err)
		return
	case p.dialect.UniqueViolation(err) && it.kind != itemPoison:
		short, err = p.inTx(ctx, func(tx *gorm.DB) (bool, error) {
			n, err := p.deleteLocated(tx, []string{o.locator}, o.lease)
			return n != 1, err
		})
		if err == nil && !short {
			p.cfg.Logger.InfoContext(o.ctx, "asyncmonolith: message superseded by a pending message with its insert id, produced while it ran",
				"message_id", o.row.ID, "insert_id", o.row.InsertID, "consumer", o.row.ConsumerType)
			return
		}
	}
	if err == nil && short {
		o.err = lostLease(o.err)
		return
	}
	if p.dialect.Retryable(err) || isConnError(err) {
		p.cfg.Logger.ErrorContext(o.ctx, "asyncmonolith: could not record a run's outcome; the message runs again when its lease ends",
			"message_id", o.row.ID, "consumer", o.row.ConsumerType, "error", err)
		return
	}
	if it.kind == itemPending || it.kind == itemSnooze {
		p.cfg.Logger.ErrorContext(o.ctx, "asyncmonolith: could not make a message pending again; it is due again when its lease ends",
			"message_id", o.row.ID, "consumer", o.row.ConsumerType, "error", err)
		return
	}
	// Set apart: a counted attempt whose error is the refusal.
	refusal := fmt.Errorf("asyncmonolith: the database refused this run's outcome: %w (run error: %v)", err, o.err)
	delay := p.cfg.AttemptDelay // the retry policy is asked on the run's goroutine, never here
	if o.decided && o.err != nil && !o.snoozed {
		delay = o.delay // what the run's policy chose for its failure
	}
	apart := item{o: o, kind: itemRetry, msg: storedError(refusal), at: now.Add(delay).UnixMilli()}
	if o.info.Attempt >= o.info.MaxAttempts {
		apart.kind = itemPoison
	}
	pl = plan{items: []item{apart}}
	short, err2 := p.inTx(ctx, func(tx *gorm.DB) (bool, error) { return p.write(tx, pl, now) })
	if err2 != nil || short {
		p.cfg.Logger.ErrorContext(o.ctx, "asyncmonolith: could not record or set apart a run's outcome; the message runs again when its lease ends",
			"message_id", o.row.ID, "consumer", o.row.ConsumerType, "error", err, "set_apart_error", err2)
		return
	}
	p.cfg.Logger.WarnContext(o.ctx, "asyncmonolith: the database refused a run's outcome; the message was set apart with the refusal as its error",
		"message_id", o.row.ID, "consumer", o.row.ConsumerType, "error", err)
	o.err = refusal
	o.poisoned = apart.kind == itemPoison
	if !o.poisoned {
		o.retryAt = time.UnixMilli(apart.at)
	}
}

// wrapIfDBError is wrapDBError, or nil when err is nil.
func (p *Plugin) wrapIfDBError(op string, err error) error {
	if err == nil {
		return nil
	}
	return p.wrapDBError(op, err)
}

// lostLease is the error of a run whose completion its lease no longer allowed.
func lostLease(runErr error) error {
	if runErr == nil {
		return ErrLeaseLost
	}
	return fmt.Errorf("%w (the run had failed: %w)", ErrLeaseLost, runErr)
}
