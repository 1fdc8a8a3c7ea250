package asyncmonolith

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/asyncmonolith/asyncmonolith/internal/dialect"
	"gorm.io/gorm"
)

// Operating the queue: inspect, requeue and remove messages, and read statistics. These
// methods work on a registered plugin without Start (the CLI uses them that way) and use
// the plugin's clock for ages. They read from the source, never a replica (source.go).

// MessageFilter selects messages for the listing and purge operations. Zero fields match
// everything.
type MessageFilter struct {
	ConsumerType string        // only this consumer
	PayloadType  string        // only this payload type
	InsertID     string        // only messages with this insert id
	Rail         *string       // only messages on this rail (&DefaultRail: the default one); nil: every rail
	OlderThan    time.Duration // poisoned: poisoned at least this long ago; queue: created at least this long ago
	Due          *bool         // queue only: true for due messages, false for delayed ones
	Limit        int           // at most this many rows (default 100, at most 10,000)
	Offset       int           // skip this many rows (paging)
}

// ScheduleInfo is a schedule with its next run.
type ScheduleInfo struct {
	ScheduledMessage
	NextRun time.Time `json:"next_run"`
}

// RequeueOption configures RequeuePoisoned.
type RequeueOption func(*requeueOptions)

type requeueOptions struct{ delay time.Duration }

// RequeueDelay makes requeued messages due d from now instead of at once.
func RequeueDelay(d time.Duration) RequeueOption { return func(o *requeueOptions) { o.delay = d } }

func (p *Plugin) adminDB(ctx context.Context) (*gorm.DB, error) {
	db, err := p.DB()
	if err != nil {
		return nil, err
	}
	return db.WithContext(ctx), nil
}

func (f MessageFilter) limit() int {
	switch {
	case f.Limit <= 0:
		return 100
	case f.Limit > 10_000:
		return 10_000
	}
	return f.Limit
}

// ListPoisoned lists poisoned messages, most recently poisoned first.
func (p *Plugin) ListPoisoned(ctx context.Context, f MessageFilter) ([]PoisonedMessage, error) {
	db, err := p.adminDB(ctx)
	if err != nil {
		return nil, err
	}
	var rows []PoisonedMessage
	err = readOnSource(db, func(tx *gorm.DB) error {
		q := p.filterPoisoned(tx.Model(&PoisonedMessage{}), f)
		return q.Order("poisoned_at DESC, id").Limit(f.limit()).Offset(f.Offset).Find(&rows).Error
	})
	if err != nil {
		return nil, p.wrapDBError("list poisoned", err)
	}
	return rows, nil
}

func (p *Plugin) filterPoisoned(q *gorm.DB, f MessageFilter) *gorm.DB {
	q = p.whereIdentity(q, f)
	if f.OlderThan > 0 {
		q = q.Where("poisoned_at <= ?", p.now().Add(-f.OlderThan).UnixMilli())
	}
	return q
}

// whereIdentity applies the filter's conditions that both message tables share. A value
// that p's database cannot hold makes the query fail with ErrInvalidOption (PostgreSQL would
// refuse it with an error of its own).
func (p *Plugin) whereIdentity(q *gorm.DB, f MessageFilter) *gorm.DB {
	for name, v := range map[string]string{"ConsumerType": f.ConsumerType, "PayloadType": f.PayloadType, "InsertID": f.InsertID} {
		if !p.storable(v) {
			_ = q.AddError(fmt.Errorf("%w: MessageFilter.%s %q holds bytes PostgreSQL text cannot", ErrInvalidOption, name, v))
		}
	}
	if f.ConsumerType != "" {
		q = q.Where("consumer_type = ?", f.ConsumerType)
	}
	if f.PayloadType != "" {
		q = q.Where("payload_type = ?", f.PayloadType)
	}
	if f.InsertID != "" {
		q = q.Where("insert_id = ?", f.InsertID)
	}
	if f.Rail != nil {
		if !p.storable(*f.Rail) {
			_ = q.AddError(fmt.Errorf("%w: MessageFilter.Rail %q holds bytes PostgreSQL text cannot", ErrInvalidOption, *f.Rail))
		}
		// Pending messages: a range of the rail index, which PageMessages walks in order.
		q = q.Where("rail = ?", *f.Rail)
	}
	return q
}

// GetPoisoned returns one poisoned message, or ErrMessageNotFound.
func (p *Plugin) GetPoisoned(ctx context.Context, id string) (PoisonedMessage, error) {
	return getByID[PoisonedMessage](ctx, p, id, "poisoned message")
}

// getByID reads one row of T's table by id; what names it in errors.
func getByID[T any](ctx context.Context, p *Plugin, id, what string) (T, error) {
	var row T
	db, err := p.adminDB(ctx)
	if err != nil {
		return row, err
	}
	err = gorm.ErrRecordNotFound // no row holds an id its database cannot store
	if p.storable(id) {
		err = readOnSource(db, func(tx *gorm.DB) error { return tx.Where("id = ?", id).Take(&row).Error })
	}
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return row, fmt.Errorf("%w: %s %q", ErrMessageNotFound, what, id)
	}
	if err != nil {
		return row, p.wrapDBError("get "+what, err)
	}
	return row, nil
}

// RequeuePoisoned moves poisoned messages back to consumer_messages, in one transaction,
// with attempts reset to 0 and due now (or after RequeueDelay). A message whose insert id
// is pending again for its consumer is not requeued (it would break deduplication): it stays
// poisoned and is reported in the error, which matches ErrRequeueConflict. It returns how
// many moved. An id that is not poisoned fails with ErrMessageNotFound and moves nothing.
func (p *Plugin) RequeuePoisoned(ctx context.Context, ids []string, opts ...RequeueOption) (int, error) {
	var o requeueOptions
	for _, opt := range opts {
		opt(&o)
	}
	db, err := p.adminDB(ctx)
	if err != nil {
		return 0, err
	}
	moved := 0
	var conflicts []string
	err = db.Transaction(func(tx *gorm.DB) error {
		var rows []PoisonedMessage
		q := tx.Where("id IN ?", p.storableOnly(ids)).Order("id")
		if p.dialect.RowLocks() {
			// A concurrent requeue of the same ids (two operators, a double-clicked
			// button) waits here and then finds them gone (ErrMessageNotFound), rather
			// than reading them too and mistaking its own twin's inserts for an insert
			// id pending again (ErrRequeueConflict, "left poisoned", which they are not).
			q = q.Clauses(dialect.ForUpdate)
		}
		if err := q.Find(&rows).Error; err != nil {
			return err
		}
		if len(rows) != len(uniq(ids)) {
			return fmt.Errorf("%w: %d of %d ids are not poisoned messages", ErrMessageNotFound, len(uniq(ids))-len(rows), len(uniq(ids)))
		}
		now := p.now()
		due := now.Add(o.delay).UnixMilli()
		for _, r := range rows {
			msg := ConsumerMessage{
				ID: r.ID, CreatedAt: r.CreatedAt, AvailableAfter: due, Attempts: 0, ConsumerType: r.ConsumerType,
				PayloadType: r.PayloadType, Payload: r.Payload, InsertID: r.InsertID, TraceID: r.TraceID, SpanID: r.SpanID,
				Rail: r.Rail, // back on the rail it was poisoned on
			}
			res := tx.Exec(p.insertSQL(1, true, true, true), msg.ID, msg.CreatedAt, msg.AvailableAfter, msg.ConsumerType,
				msg.PayloadType, msg.Payload, msg.InsertID, msg.TraceID, msg.SpanID, msg.Rail)
			if res.Error != nil {
				return res.Error
			}
			if res.RowsAffected == 0 {
				conflicts = append(conflicts, r.ID)
				continue
			}
			if err := tx.Where("id = ?", r.ID).Delete(&PoisonedMessage{}).Error; err != nil {
				return err
			}
			moved++
		}
		return nil
	})
	if err != nil {
		return 0, p.wrapDBError("requeue poisoned", err)
	}
	if moved > 0 {
		p.wake.Notify()
	}
	if len(conflicts) > 0 {
		return moved, fmt.Errorf("%w: %v", ErrRequeueConflict, conflicts)
	}
	return moved, nil
}

// DeletePoisoned deletes poisoned messages by id and returns how many.
func (p *Plugin) DeletePoisoned(ctx context.Context, ids []string) (int64, error) {
	db, err := p.adminDB(ctx)
	if err != nil {
		return 0, err
	}
	res := db.Where("id IN ?", p.storableOnly(ids)).Delete(&PoisonedMessage{})
	if res.Error != nil {
		return 0, p.wrapDBError("delete poisoned", res.Error)
	}
	return res.RowsAffected, nil
}

// PurgePoisoned deletes the poisoned messages that match f (f.OlderThan is required, so
// that a purge never empties the table by accident) and returns how many.
func (p *Plugin) PurgePoisoned(ctx context.Context, f MessageFilter) (int64, error) {
	if f.OlderThan <= 0 {
		return 0, fmt.Errorf("%w: PurgePoisoned needs MessageFilter.OlderThan", ErrInvalidOption)
	}
	db, err := p.adminDB(ctx)
	if err != nil {
		return 0, err
	}
	res := p.filterPoisoned(db, f).Delete(&PoisonedMessage{})
	if res.Error != nil {
		return 0, p.wrapDBError("purge poisoned", res.Error)
	}
	return res.RowsAffected, nil
}

// ListMessages lists pending messages (due ones and delayed ones), in fetch order rail by
// rail (the default rail first).
func (p *Plugin) ListMessages(ctx context.Context, f MessageFilter) ([]ConsumerMessage, error) {
	db, err := p.adminDB(ctx)
	if err != nil {
		return nil, err
	}
	q := p.filterMessages(db.Model(&ConsumerMessage{}), f)
	var rows []ConsumerMessage
	err = readOnSource(q, func(tx *gorm.DB) error {
		return tx.Order(listOrder).Limit(f.limit()).Offset(f.Offset).Find(&rows).Error
	})
	if err != nil {
		return nil, p.wrapDBError("list messages", err)
	}
	return rows, nil
}

// DeleteMessages deletes pending messages by id and returns how many. A message that a
// processor is running is deleted when that batch ends (the delete waits for its lock).
func (p *Plugin) DeleteMessages(ctx context.Context, ids []string) (int64, error) {
	db, err := p.adminDB(ctx)
	if err != nil {
		return 0, err
	}
	res := db.Where("id IN ?", p.storableOnly(ids)).Delete(&ConsumerMessage{})
	if res.Error != nil {
		return 0, p.wrapDBError("delete messages", res.Error)
	}
	return res.RowsAffected, nil
}

// ListSchedules lists schedules (all, or those with tag) with their next run, soonest first.
func (p *Plugin) ListSchedules(ctx context.Context, tag string) ([]ScheduleInfo, error) {
	db, err := p.adminDB(ctx)
	if err != nil {
		return nil, err
	}
	if err := p.checkTagFilter(tag); err != nil {
		return nil, err
	}
	q := db.Model(&ScheduledMessage{})
	if tag != "" {
		q = q.Where("tag = ?", tag)
	}
	var rows []ScheduledMessage
	err = readOnSource(q, func(tx *gorm.DB) error { return tx.Order("available_after, id").Find(&rows).Error })
	if err != nil {
		return nil, p.wrapDBError("list schedules", err)
	}
	return scheduleInfos(rows), nil
}

func scheduleInfos(rows []ScheduledMessage) []ScheduleInfo {
	out := make([]ScheduleInfo, len(rows))
	for i, r := range rows {
		out[i] = ScheduleInfo{ScheduledMessage: r, NextRun: time.UnixMilli(r.AvailableAfter).UTC()}
	}
	return out
}

// storable reports whether s fits a text column of p's database (dialect.TextStorable).
func (p *Plugin) storable(s string) bool { return p.dialect == nil || p.dialect.TextStorable(s) }

// storableOnly is ids without those that no row can hold (see storable).
func (p *Plugin) storableOnly(ids []string) []string {
	return slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return !p.storable(id) })
}

func uniq(ss []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
