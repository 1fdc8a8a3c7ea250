package asyncmonolith

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"time"

	"gorm.io/gorm"
)

// ProduceOption configures one Produce call.
type ProduceOption func(*produceOptions)

type produceOptions struct {
	delay     time.Duration
	at        time.Time
	insertID  string
	insertIDs []string
	hasIDs    bool // InsertIDs was given (with no ids, its slice is nil)
}

// Delay makes the message due d after it is produced (sub-second precision).
func Delay(d time.Duration) ProduceOption {
	return func(o *produceOptions) { o.delay = d; o.at = time.Time{} }
}

// At makes the message due at t.
func At(t time.Time) ProduceOption { return func(o *produceOptions) { o.at = t; o.delay = 0 } }

// InsertID deduplicates: while a message with this insert id is pending for a consumer,
// producing the id again for that consumer is skipped without an error. Once the earlier
// message is consumed (or poisoned), the id can be produced again. Without it each Produce
// gets a fresh id.
func InsertID(id string) ProduceOption { return func(o *produceOptions) { o.insertID = id } }

// InsertIDs is InsertID for a ProduceBatch: ids[i] is the insert id of payloads[i]. It
// needs exactly one id per payload.
func InsertIDs(ids ...string) ProduceOption {
	return func(o *produceOptions) { o.insertIDs, o.hasIDs = ids, true }
}

// Produce writes payload as one message per consumer registered for its type, all sharing
// one insert id. It returns a *gorm.DB to chain the domain write on; errors are on its
// Error field (and are returned by the chained write).
//
// On a *gorm.DB inside a transaction (db.Transaction, Begin) the rows are written at once,
// in that transaction: they commit or roll back with it.
//
// On a *gorm.DB outside a transaction the rows are buffered on the returned session and
// written inside the transaction of the next write run on it (or on anything chained
// from it) that changes rows, before that commits: Produce(db, ev).Save(&order) commits
// both or neither. A write is a Create, Save, Update, Delete, or an Exec of an INSERT,
// UPDATE, DELETE, REPLACE or MERGE; one that affected no row (an Update or Delete that
// matched nothing, a Create whose ON CONFLICT DO NOTHING skipped its row) leaves them
// buffered, as does a write that fails or whose transaction (or savepoint) rolls back —
// see Pending, Flush and Discard. With SkipDefaultTransaction, and for Exec, the plugin
// opens the transaction itself.
func Produce(db *gorm.DB, payload any, opts ...ProduceOption) *gorm.DB {
	return produce(db, []any{payload}, opts)
}

// ProduceBatch is Produce for many payloads of one type, written as one multi-row insert.
// Each payload gets its own insert id (fresh, or from InsertIDs); the InsertID option is
// not allowed here.
func ProduceBatch[T any](db *gorm.DB, payloads []T, opts ...ProduceOption) *gorm.DB {
	all := make([]any, len(payloads))
	for i := range payloads {
		all[i] = payloads[i]
	}
	return produce(db, all, opts)
}

// ProduceTx writes payload in the transaction tx at once and returns the error; ctx bounds
// the write and carries the trace context (Hooks.TraceContext). Unlike Produce it cannot
// buffer: outside a transaction it fails with ErrTransactionRequired.
func ProduceTx(ctx context.Context, tx *gorm.DB, payload any, opts ...ProduceOption) error {
	if !inTx(tx) {
		return fmt.Errorf("%w: ProduceTx needs a *gorm.DB from db.Transaction or db.Begin", ErrTransactionRequired)
	}
	return produce(tx.WithContext(ctx), []any{payload}, opts).Error
}

// ProduceNow writes payload at once. Use it for messages that go with no domain write.
//
// On a *gorm.DB outside a transaction it writes in a transaction of its own and commits
// it, retrying deadlocks and lock-wait timeouts. On a transaction it writes there, like
// ProduceTx, and never retries: a conflict may have aborted the whole transaction (on
// MySQL/MariaDB a deadlock rolls it back, and later statements would run outside it), so
// it is returned wrapping ErrRetryable for the caller to roll back and retry as a whole.
func ProduceNow(ctx context.Context, db *gorm.DB, payload any, opts ...ProduceOption) error {
	p, err := pluginOf(db)
	if err != nil {
		return err
	}
	rows, err := p.buildRows(ctx, []any{payload}, opts)
	if err != nil {
		return err
	}
	if inTx(db) {
		if err := p.insertRows(db.WithContext(ctx), rows); err != nil {
			return err
		}
		p.wake.Notify() // the commit is still ahead: woken processors retry briefly
		return nil
	}
	return p.insertOwnTx(ctx, db, rows)
}

// Pending returns how many messages are buffered on db and not yet written.
func Pending(db *gorm.DB) int {
	if b := bufferOf(db); b != nil {
		return b.len()
	}
	return 0
}

// Discard drops the messages buffered on db and returns how many there were: those of a
// write that changed nothing (see Produce), which announce nothing. Without it such a
// session is reported, when it is collected, as dropped with unwritten messages.
func Discard(db *gorm.DB) int {
	if b := bufferOf(db); b != nil {
		return len(b.take())
	}
	return 0
}

// Flush writes the messages buffered on db. On failure they stay buffered.
//
// Outside a transaction it writes them in a transaction of its own, retrying deadlocks.
// On a transaction begun on the producing session (s.Transaction, s.Begin) it writes them
// there without retrying, like ProduceNow: they go back to the buffer if that transaction
// rolls back, and a conflict is returned wrapping ErrRetryable.
func Flush(ctx context.Context, db *gorm.DB) error {
	p, err := pluginOf(db)
	if err != nil {
		return err
	}
	b := bufferOf(db)
	if b == nil {
		return nil
	}
	rows := b.take()
	if len(rows) == 0 {
		return nil
	}
	if inTx(db) {
		db = db.WithContext(ctx)
		err = p.insertRows(db, rows)
		if err == nil {
			p.settleWith(db, b, rows)
			return nil
		}
	} else {
		err = p.insertOwnTx(ctx, db, rows)
	}
	if err != nil {
		b.putBack(rows)
	}
	return err
}

func produce(db *gorm.DB, payloads []any, opts []ProduceOption) *gorm.DB {
	if db.Error != nil {
		return db
	}
	p, err := pluginOf(db)
	if err != nil {
		return withError(db, err)
	}
	rows, err := p.buildRows(db.Statement.Context, payloads, opts)
	if err != nil {
		return withError(db, err)
	}
	if inTx(db) {
		if err := p.insertRows(db, rows); err != nil {
			return withError(db, err)
		}
		p.wake.Notify() // the commit is still ahead: woken processors retry briefly
		return db.Session(&gorm.Session{})
	}
	b := bufferOf(db)
	if b == nil {
		b = newBuffer(p.cfg.Logger)
		db = db.Set(bufferKey, b)
	}
	b.add(rows)
	s := db.Session(&gorm.Session{})
	watchPool(s)
	return s
}

// derefType is t without one level of pointer: T and *T are one payload type.
func derefType(t reflect.Type) reflect.Type {
	if t.Kind() == reflect.Pointer {
		return t.Elem()
	}
	return t
}

func withError(db *gorm.DB, err error) *gorm.DB {
	s := db.Session(&gorm.Session{})
	_ = s.AddError(err)
	return s
}

// inTx reports whether db is bound to a transaction.
func inTx(db *gorm.DB) bool {
	c, ok := db.Statement.ConnPool.(gorm.TxCommitter)
	return ok && c != nil
}

// newRow is a row to insert, and whether its insert id was generated by this process
// (freshID): such an id cannot collide with a pending row, so its INSERT needs no
// duplicate handling (cheaper on PostgreSQL). The flag travels beside the exported
// model, which Hooks.Produced shows, rather than in it.
type newRow struct {
	ConsumerMessage
	freshID bool
}

// messagesOf is the rows' models, for Hooks.Produced.
func messagesOf(rows []newRow) []ConsumerMessage {
	out := make([]ConsumerMessage, len(rows))
	for i := range rows {
		out[i] = rows[i].ConsumerMessage
	}
	return out
}

// buildRows fans payloads out into one row per consumer.
func (p *Plugin) buildRows(ctx context.Context, payloads []any, opts []ProduceOption) ([]newRow, error) {
	var o produceOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.insertID != "" {
		if len(payloads) > 1 {
			return nil, fmt.Errorf("%w: InsertID applies to one payload; a batch gets one insert id per payload", ErrInvalidOption)
		}
		if err := checkName("insert id", o.insertID); err != nil {
			return nil, err
		}
	}
	if o.hasIDs {
		if o.insertID != "" || len(o.insertIDs) != len(payloads) {
			return nil, fmt.Errorf("%w: InsertIDs gives %d ids for %d payloads (one each, without InsertID)", ErrInvalidOption, len(o.insertIDs), len(payloads))
		}
		for _, id := range o.insertIDs {
			if err := checkName("insert id", id); err != nil {
				return nil, err
			}
		}
	}
	now := p.now()
	due := now.Add(o.delay)
	if !o.at.IsZero() {
		due = o.at
	}
	var traceID, spanID *string
	if p.cfg.Hooks.TraceContext != nil && ctx != nil {
		if t, s := p.cfg.Hooks.TraceContext(ctx); isHex(t, 32) && isHex(s, 16) {
			traceID, spanID = &t, &s
		}
	}
	rows := make([]newRow, 0, len(payloads))
	for k, payload := range payloads {
		goType := reflect.TypeOf(payload)
		name, err := p.registry.payloadName(goType)
		if err != nil {
			return nil, err
		}
		if goType.Kind() == reflect.Pointer && reflect.ValueOf(payload).IsNil() {
			return nil, fmt.Errorf("%w: %s is a nil pointer", ErrInvalidPayload, goType)
		}
		consumers := p.registry.consumersOf(name)
		if len(consumers) == 0 {
			return nil, fmt.Errorf("%w: %q (register a consumer with asyncmonolith.Register)", ErrNoConsumers, name)
		}
		if reg := consumers[0].payloadGo; derefType(reg) != derefType(goType) {
			// Two Go types with one stored name (same type name in two packages): the
			// consumers would decode this payload into the other type.
			return nil, fmt.Errorf("%w: payload type %q is the name of %s, registered first; %s would be delivered to its consumers (give one of them a PayloadType() method)",
				ErrInvalidName, name, reg, goType)
		}
		body, err := json.Marshal(payload)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalidPayload, name, err)
		}
		insertID := o.insertID
		if o.hasIDs {
			insertID = o.insertIDs[k]
		}
		fresh := insertID == ""
		for i, c := range consumers {
			id := p.ids.New(now)
			if fresh && i == 0 {
				// A generated insert id is the first row's id: unique, one id fewer to
				// make, and read back by the fetch as NULL (see dialect.ClaimColumns).
				insertID = id
			}
			rows = append(rows, newRow{ConsumerMessage: ConsumerMessage{
				ID:             id,
				CreatedAt:      now.UnixMilli(),
				AvailableAfter: due.UnixMilli(),
				ConsumerType:   c.consumerType,
				PayloadType:    name,
				Payload:        string(body),
				InsertID:       insertID,
				TraceID:        traceID,
				SpanID:         spanID,
				Rail:           c.rail,
			}, freshID: fresh})
		}
	}
	return rows, nil
}

// insertBatchRows is how many rows go in one INSERT statement (PostgreSQL allows 65535
// parameters per statement; a row has 11).
const insertBatchRows = 1000

// insertRows writes rows on db's connection (a transaction), skipping duplicates.
func (p *Plugin) insertRows(db *gorm.DB, rows []newRow) error {
	conn := db.Statement.ConnPool
	if w, ok := conn.(*watchedTx); ok {
		conn = w.ConnPool // the *sql.Tx, for the prepared insert
	}
	if err := p.execInsert(db.Statement.Context, conn, rows); err != nil {
		return p.wrapDBError("produce", err)
	}
	if p.cfg.Hooks.Produced != nil {
		p.cfg.Hooks.Produced(db.Statement.Context, messagesOf(rows))
	}
	return nil
}

// insertOwnTx writes rows in a transaction of the library's own, retrying conflicts.
func (p *Plugin) insertOwnTx(ctx context.Context, db *gorm.DB, rows []newRow) error {
	var err error
	for attempt := 0; attempt < ownTxAttempts; attempt++ {
		err = db.WithContext(ctx).Session(&gorm.Session{NewDB: true}).Transaction(func(tx *gorm.DB) error {
			return p.insertRows(tx, rows)
		})
		if err == nil {
			p.wake.Notify()
			return nil
		}
		if !errors.Is(err, ErrRetryable) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

// ownTxAttempts bounds the retries of a transaction the library owns.
const ownTxAttempts = 5

// wrapDBError marks contention errors as ErrRetryable.
func (p *Plugin) wrapDBError(op string, err error) error {
	if p.dialect != nil && p.dialect.Retryable(err) {
		return fmt.Errorf("asyncmonolith: %s: %w: %w", op, ErrRetryable, err)
	}
	return fmt.Errorf("asyncmonolith: %s: %w", op, err)
}

// isHex reports whether s is n lowercase hex digits (a W3C trace or span id): anything
// else, e.g. taken from a hostile traceparent, would not fit the trace columns.
func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < n; i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
