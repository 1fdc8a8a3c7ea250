package asyncmonolith

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/asyncmonolith/asyncmonolith/internal/dialect"
	"gorm.io/gorm"
)

// A completion's statements: decide turns a batch of outcomes into a plan of items, write
// runs the plan in one transaction with one statement per group of like items (deletes,
// retries, snoozes, poison copies, releases), each fenced by its claim's lease. The
// located updates and deletes find claimed rows by their locator (dialect.Locator).

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
			if !o.decided {
				p.decideRetry(o, now) // an outcome that did not come from a consumer's run
			}
			switch {
			case o.snoozed:
				pl.items = append(pl.items, item{o: o, kind: itemSnooze, at: o.retryAt.UnixMilli()})
			case o.info.Attempt >= o.info.MaxAttempts:
				o.poisoned = true
				pl.items = append(pl.items, item{o: o, kind: itemPoison, msg: storedError(o.err)})
			default:
				o.retryAt = now.Add(o.delay)
				if o.retryAt.Before(o.notBefore) {
					o.retryAt = o.notBefore
				}
				pl.items = append(pl.items, item{o: o, kind: itemRetry, msg: storedError(o.err), at: o.retryAt.UnixMilli()})
			}
		}
	}
	for i := range pl.items {
		it := &pl.items[i]
		o := it.o
		if it.kind == itemSnooze {
			p.cfg.Logger.DebugContext(o.ctx, "asyncmonolith: consumer snoozed its message", "message_id", o.row.ID, "consumer", o.row.ConsumerType,
				"attempt", o.info.Attempt, "snoozes", o.row.Snoozes+1, slog.Time("retry_at", o.retryAt), "retry_delay", o.retryAt.Sub(now))
			continue
		}
		if it.kind != itemRetry && it.kind != itemPoison {
			continue
		}
		log := p.cfg.Logger.With("message_id", o.row.ID, "consumer", o.row.ConsumerType, "attempt", o.info.Attempt,
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
