package asyncmonolith

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
		p.log.ErrorContext(ctx, "asyncmonolith: could not record outcomes; their messages run again when their lease ends",
			"messages", len(outcomes), "error", err)
	}
	recorded := err == nil
	p.counters.completed(outcomes, recorded)
	if p.hooks.AfterConsume != nil {
		for i := range outcomes {
			o := &outcomes[i]
			if !o.setAside.IsZero() || o.info.Attempt == 0 {
				continue // did not run
			}
			r := Result{Err: o.err, Duration: o.took, Poisoned: o.poisoned, Snoozed: o.snoozed, RetryAt: o.retryAt}
			if !recorded && !o.done {
				r = Result{Err: fmt.Errorf("asyncmonolith: outcome not recorded (the message runs again): %w", err), Duration: o.took}
			}
			p.hooks.AfterConsume(o.ctx, o.info, r)
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
			p.log.WarnContext(ctx, "asyncmonolith: could not set aside a paused consumer's messages; claims will as they meet them",
				"consumer", o.row.ConsumerType, "error", err)
			continue
		}
		p.log.DebugContext(ctx, "asyncmonolith: set aside a paused consumer's messages", "consumer", o.row.ConsumerType, "messages", n, "until", o.tripped)
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
		p.log.WarnContext(ctx, "asyncmonolith: recording a batch of outcomes failed; recording them one by one", "error", err)
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

// item is one outcome's write.
type item struct {
	o    *outcome
	kind itemKind
	msg  string // the stored error, for retries and poison
	at   int64  // the new available_after, for retries, set-asides and releases
}

type itemKind int

const (
	itemDelete itemKind = iota
	itemRetry
	itemPoison
	itemPending // set aside or released: pending again at `at`, no attempt counted
	itemSnooze  // snoozed: pending again at `at`, no attempt counted, one more snooze
)

// plan is a completion's items in the order they are written.
type plan struct{ items []item }

func (pl plan) empty() bool { return len(pl.items) == 0 }

// oneDelete reports whether the plan is one fenced DELETE: successes of one claim.
func (pl plan) oneDelete() bool {
	if len(pl.items) > insertBatchRows {
		return false
	}
	for _, it := range pl.items {
		if it.kind != itemDelete || it.o.lease != pl.items[0].o.lease {
			return false
		}
	}
	return true
}

// deleteAlone runs a oneDelete plan in autocommit. When it deleted fewer rows than it was
// given, the runs whose message is still there (claimed by another processor since) lost
// their lease; the others are done (by this delete, or by the run that claimed them next).
func (p *Plugin) deleteAlone(ctx context.Context, pl plan) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, completeTimeout)
	defer cancel()
	db := p.db.WithContext(ctx)
	locs := make([]string, len(pl.items))
	for i, it := range pl.items {
		locs[i] = it.o.locator
	}
	n, err := p.deleteLocated(db, locs, pl.items[0].o.lease)
	if err != nil || n == int64(len(locs)) {
		return false, p.wrapIfDBError("delete completed messages", err)
	}
	ids := make([]string, len(pl.items))
	for i, it := range pl.items {
		ids[i] = it.o.row.ID
	}
	var still []string
	err = readOnSource(db, func(tx *gorm.DB) error {
		return tx.Model(&ConsumerMessage{}).Where("id IN ?", ids).Pluck("id", &still).Error
	})
	if err != nil {
		return false, err
	}
	lost := map[string]bool{}
	for _, id := range still {
		lost[id] = true
	}
	for _, it := range pl.items {
		if lost[it.o.row.ID] {
			it.o.err = lostLease(it.o.err)
		}
	}
	return false, nil
}

// firstLease is the earliest lease end among the plan's messages.
func (pl plan) firstLease() int64 {
	first := int64(0)
	for _, it := range pl.items {
		if first == 0 || it.o.lease < first {
			first = it.o.lease
		}
	}
	return first
}

// decide turns outcomes into writes and fills in what each outcome's report says.
func (p *Plugin) decide(outcomes []outcome, now time.Time) plan {
	var pl plan
	for i := range outcomes {
		o := &outcomes[i]
		switch {
		case o.done:
			continue
		case !o.setAside.IsZero():
			pl.items = append(pl.items, item{o: o, kind: itemPending, at: o.setAside.UnixMilli()})
		case o.release:
			pl.items = append(pl.items, item{o: o, kind: itemPending, at: now.UnixMilli()})
		case o.err == nil:
			pl.items = append(pl.items, item{o: o, kind: itemDelete})
		case errors.Is(o.err, ErrPermanent):
			o.poisoned = true
			pl.items = append(pl.items, item{o: o, kind: itemPoison, msg: storedError(o.err)})
		default:
			var notBefore time.Time
			if se := snoozeOf(o.err); se != nil {
				at, granted := p.snooze(o, se, now)
				if granted {
					o.snoozed, o.retryAt = true, at
					pl.items = append(pl.items, item{o: o, kind: itemSnooze, at: at.UnixMilli()})
					continue
				}
				notBefore = at // o.err is the snooze limit's failure now
			}
			if o.info.Attempt >= o.info.MaxAttempts {
				o.poisoned = true
				pl.items = append(pl.items, item{o: o, kind: itemPoison, msg: storedError(o.err)})
				continue
			}
			o.retryAt = now.Add(p.retryDelay(o, o.err))
			if o.retryAt.Before(notBefore) {
				o.retryAt = notBefore
			}
			pl.items = append(pl.items, item{o: o, kind: itemRetry, msg: storedError(o.err), at: o.retryAt.UnixMilli()})
		}
	}
	for i := range pl.items {
		it := &pl.items[i]
		o := it.o
		if it.kind == itemSnooze {
			p.log.DebugContext(o.ctx, "asyncmonolith: consumer snoozed its message", "message_id", o.row.ID, "consumer", o.row.ConsumerType,
				"attempt", o.info.Attempt, "snoozes", o.row.Snoozes+1, slog.Time("retry_at", o.retryAt), "retry_delay", o.retryAt.Sub(now))
			continue
		}
		if it.kind != itemRetry && it.kind != itemPoison {
			continue
		}
		log := p.log.With("message_id", o.row.ID, "consumer", o.row.ConsumerType, "attempt", o.info.Attempt,
			"max_attempts", o.info.MaxAttempts, "duration", o.took, "error", o.err)
		if it.kind == itemPoison {
			log.WarnContext(o.ctx, "asyncmonolith: message poisoned")
		} else {
			log.InfoContext(o.ctx, "asyncmonolith: consumer failed; will retry", slog.Time("retry_at", o.retryAt), "retry_delay", o.retryAt.Sub(now))
		}
	}
	return pl
}

// groupKey gathers items written by one statement.
type groupKey struct {
	kind    itemKind
	lease   int64
	attempt int
	snoozes int
	msg     string
	at      int64
}

// write runs a plan's statements in tx, one per group of like items. It reports a short
// write (a fenced statement that touched fewer rows than it was given: a lost lease).
func (p *Plugin) write(tx *gorm.DB, pl plan, now time.Time) (short bool, err error) {
	groups := map[groupKey][]*item{}
	var order []groupKey
	for i := range pl.items {
		it := &pl.items[i]
		k := groupKey{kind: it.kind, lease: it.o.lease, at: it.at}
		if it.kind == itemRetry || it.kind == itemPoison {
			k.attempt, k.msg = it.o.info.Attempt, it.msg
		}
		if it.kind == itemRetry {
			k.at = 0 // one statement whatever the retry times (jitter): see retryAt
		}
		if it.kind == itemSnooze {
			k.snoozes = it.o.row.Snoozes + 1
		}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], it)
	}
	// Poisoned rows are copied before any delete.
	var deletes map[int64][]string
	for _, k := range order {
		its := groups[k]
		n, err := p.writeGroup(tx, k, its, now)
		if err != nil {
			return false, err
		}
		if n != int64(len(its)) {
			return true, nil
		}
		if k.kind == itemPoison || k.kind == itemDelete {
			if deletes == nil {
				deletes = map[int64][]string{}
			}
			for _, it := range its {
				deletes[k.lease] = append(deletes[k.lease], it.o.locator)
			}
		}
	}
	for lease, locs := range deletes {
		n, err := p.deleteLocated(tx, locs, lease)
		if err != nil {
			return false, p.wrapDBError("delete completed messages", err)
		}
		if n != int64(len(locs)) {
			return true, nil
		}
	}
	return false, nil
}

// writeGroup writes one group's statement (deletes are gathered and written after) and
// returns the rows it touched (for deletes: the group's size).
func (p *Plugin) writeGroup(tx *gorm.DB, k groupKey, its []*item, now time.Time) (int64, error) {
	locs := make([]string, len(its))
	for i, it := range its {
		locs[i] = it.o.locator
	}
	ctx, conn := tx.Statement.Context, tx.Statement.ConnPool
	switch k.kind {
	case itemDelete:
		return int64(len(its)), nil
	case itemRetry:
		var total int64
		for start := 0; start < len(its); start += insertBatchRows {
			chunk := its[start:min(start+insertBatchRows, len(its))]
			n, err := p.updateLocatedN(ctx, conn, []string{"attempts", "available_after", "last_error", "pending"},
				[]any{k.attempt, retryAt(chunk), k.msg, true}, locs[start:start+len(chunk)], k.lease)
			total += n
			if err != nil {
				return total, p.wrapDBError("reschedule failed messages", err)
			}
		}
		return total, nil
	case itemPending:
		n, err := p.updateLocatedN(ctx, conn, []string{"available_after", "pending"}, []any{k.at, true}, locs, k.lease)
		return n, p.wrapIfDBError("make messages pending again", err)
	case itemSnooze:
		n, err := p.updateLocatedN(ctx, conn, []string{"available_after", "snoozes", "pending"}, []any{k.at, k.snoozes, true}, locs, k.lease)
		return n, p.wrapIfDBError("snooze messages", err)
	default: // itemPoison
		n, err := p.poison(tx, its, k, now)
		return n, p.wrapIfDBError("poison messages", err)
	}
}

// retryAt is the available_after of retried items: one value when they share it, else a
// dialect.PerRow of each item's.
func retryAt(its []*item) any {
	same := true
	for _, it := range its {
		same = same && it.at == its[0].at
	}
	if same {
		return its[0].at
	}
	pr := dialect.PerRow{IDs: make([]string, len(its)), Values: make([]int64, len(its))}
	for i, it := range its {
		pr.IDs[i], pr.Values[i] = it.o.row.ID, it.at
	}
	return pr
}

// poison copies its' rows to poisoned_messages in the database (dialect.PoisonCopy).
func (p *Plugin) poison(tx *gorm.DB, its []*item, k groupKey, now time.Time) (int64, error) {
	d := p.dialect
	// A message poisoned again (its earlier copy restored, or written by hand) replaces
	// its earlier copy: the primary key would refuse the copy, and the message would be
	// left claimed, to run once more every lease.
	ids := make([]any, len(its))
	for i, it := range its {
		ids[i] = it.o.row.ID
	}
	if _, err := tx.Statement.ConnPool.ExecContext(tx.Statement.Context, d.DeleteByIDs("poisoned_messages", len(ids)), ids...); err != nil {
		return 0, err
	}
	msgs := make([]dialect.Poisoned, len(its))
	for i, it := range its {
		msgs[i] = dialect.Poisoned{ID: it.o.row.ID, Due: it.o.row.AvailableAfter}
	}
	q, args := dialect.PoisonCopy(d, msgs, k.attempt, k.msg, now.UnixMilli(), k.lease)
	res, err := tx.Statement.ConnPool.ExecContext(tx.Statement.Context, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
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
			p.log.InfoContext(o.ctx, "asyncmonolith: message superseded by a pending message with its insert id, produced while it ran",
				"message_id", o.row.ID, "insert_id", o.row.InsertID, "consumer", o.row.ConsumerType)
			return
		}
	}
	if err == nil && short {
		o.err = lostLease(o.err)
		return
	}
	if p.dialect.Retryable(err) || isConnError(err) {
		p.log.ErrorContext(o.ctx, "asyncmonolith: could not record a run's outcome; the message runs again when its lease ends",
			"message_id", o.row.ID, "consumer", o.row.ConsumerType, "error", err)
		return
	}
	if it.kind == itemPending || it.kind == itemSnooze {
		p.log.ErrorContext(o.ctx, "asyncmonolith: could not make a message pending again; it is due again when its lease ends",
			"message_id", o.row.ID, "consumer", o.row.ConsumerType, "error", err)
		return
	}
	// Set apart: a counted attempt whose error is the refusal.
	refusal := fmt.Errorf("asyncmonolith: the database refused this run's outcome: %w (run error: %v)", err, o.err)
	apart := item{o: o, kind: itemRetry, msg: storedError(refusal), at: now.Add(p.retryDelay(o, refusal)).UnixMilli()}
	if o.info.Attempt >= o.info.MaxAttempts {
		apart.kind = itemPoison
	}
	pl = plan{items: []item{apart}}
	short, err2 := p.inTx(ctx, func(tx *gorm.DB) (bool, error) { return p.write(tx, pl, now) })
	if err2 != nil || short {
		p.log.ErrorContext(o.ctx, "asyncmonolith: could not record or set apart a run's outcome; the message runs again when its lease ends",
			"message_id", o.row.ID, "consumer", o.row.ConsumerType, "error", err, "set_apart_error", err2)
		return
	}
	p.log.WarnContext(o.ctx, "asyncmonolith: the database refused a run's outcome; the message was set apart with the refusal as its error",
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

// updateLocatedN is updateLocated returning the rows it touched.
func (p *Plugin) updateLocatedN(ctx context.Context, conn gorm.ConnPool, columns []string, values []any, locators []string, lease int64) (int64, error) {
	return execChunked(ctx, conn, locators, func(chunk []string) (string, []any) {
		return p.dialect.UpdateLocated("consumer_messages", columns, values, chunk, lease)
	})
}

// execChunked runs the statement build makes for each insertBatchRows locators and returns
// the rows they touched.
func execChunked(ctx context.Context, conn gorm.ConnPool, locators []string, build func([]string) (string, []any)) (int64, error) {
	var total int64
	for start := 0; start < len(locators); start += insertBatchRows {
		q, args := build(locators[start:min(start+insertBatchRows, len(locators))])
		res, err := conn.ExecContext(ctx, q, args...)
		if err != nil {
			return total, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// updateLocated sets columns to values on the messages found by locators, on conn.
func (p *Plugin) updateLocated(ctx context.Context, conn gorm.ConnPool, columns []string, values []any, locators []string, lease int64) error {
	_, err := p.updateLocatedN(ctx, conn, columns, values, locators, lease)
	return err
}

// deleteLocated deletes claimed messages by their locators, fenced by lease, in tx.
func (p *Plugin) deleteLocated(tx *gorm.DB, locators []string, lease int64) (int64, error) {
	return execChunked(tx.Statement.Context, tx.Statement.ConnPool, locators, func(chunk []string) (string, []any) {
		return p.dialect.DeleteLocated("consumer_messages", chunk, lease)
	})
}
