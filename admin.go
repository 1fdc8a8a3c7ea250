package asyncmonolith

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
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

// QueueStats describes one consumer type on one rail (a consumer's messages are all on
// its rail, unless it moved to another rail while some were stored).
type QueueStats struct {
	ConsumerType string        `json:"consumer_type"`
	Rail         string        `json:"rail"`           // the messages' rail; "" is DefaultRail
	Pending      int64         `json:"pending"`        // rows in consumer_messages
	Running      int64         `json:"running"`        // of which claimed by a processor (pending IS NULL)
	Due          int64         `json:"due"`            // of which due now (a claimed one once its lease has ended)
	OldestDueAge time.Duration `json:"oldest_due_age"` // how long the oldest due message has waited
	Poisoned     int64         `json:"poisoned"`
}

// RailStats sums QueueStats over one rail.
type RailStats struct {
	Rail string `json:"rail"` // "" is DefaultRail
	// Configured is false for a rail this plugin does not run (not in Config.Rails): its
	// messages (written by hand, or by a process configured otherwise) are never fetched
	// here.
	Configured   bool          `json:"configured"`
	Pending      int64         `json:"pending"`
	Running      int64         `json:"running"`
	Due          int64         `json:"due"`
	OldestDueAge time.Duration `json:"oldest_due_age"`
	Poisoned     int64         `json:"poisoned"`
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

// Stats returns, per consumer type and rail, the pending, running, due and poisoned counts
// and the age of the oldest due message, ordered by consumer type, then rail.
func (p *Plugin) Stats(ctx context.Context) ([]QueueStats, error) {
	db, err := p.adminDB(ctx)
	if err != nil {
		return nil, err
	}
	now := p.now()
	// Columns named in tags: the application's NamingStrategy also maps these fields.
	var pending []struct {
		ConsumerType string `gorm:"column:consumer_type"`
		Rail         string `gorm:"column:rail"`
		Pending      int64  `gorm:"column:pending"`
		Running      int64  `gorm:"column:running"`
		Due          int64  `gorm:"column:due"`
		OldestDue    *int64 `gorm:"column:oldest_due"`
	}
	var poisoned []struct {
		ConsumerType string `gorm:"column:consumer_type"`
		Rail         string `gorm:"column:rail"`
		N            int64  `gorm:"column:n"`
	}
	err = readOnSource(db, func(tx *gorm.DB) error {
		// Model names the table for callbacks, as a query built by GORM would.
		if err := tx.Model(&ConsumerMessage{}).Raw(dialect.PendingStats, now.UnixMilli(), now.UnixMilli()).Scan(&pending).Error; err != nil {
			return err
		}
		return tx.Model(&PoisonedMessage{}).Raw(dialect.PoisonedStats).Scan(&poisoned).Error
	})
	if err != nil {
		return nil, p.wrapDBError("stats", err)
	}
	type key struct{ consumer, rail string }
	by := map[key]*QueueStats{}
	get := func(ct, rail string) *QueueStats {
		if s, ok := by[key{ct, rail}]; ok {
			return s
		}
		s := &QueueStats{ConsumerType: ct, Rail: rail}
		by[key{ct, rail}] = s
		return s
	}
	for _, r := range pending {
		s := get(r.ConsumerType, r.Rail)
		s.Pending, s.Running, s.Due = r.Pending, r.Running, r.Due
		if r.OldestDue != nil {
			s.OldestDueAge = now.Sub(time.UnixMilli(*r.OldestDue))
		}
	}
	for _, r := range poisoned {
		get(r.ConsumerType, r.Rail).Poisoned = r.N
	}
	out := make([]QueueStats, 0, len(by))
	for _, s := range by {
		out = append(out, *s)
	}
	sortStats(out)
	return out, nil
}

// StatsByRail returns Stats summed per rail: every rail this plugin runs (DefaultRail
// first, then Config.Rails by name), empty ones included, then any other rail found on
// stored messages (Configured false), by name. OldestDueAge is the rail's oldest.
func (p *Plugin) StatsByRail(ctx context.Context) ([]RailStats, error) {
	stats, err := p.Stats(ctx)
	if err != nil {
		return nil, err
	}
	return p.railTotals(stats), nil
}

// SumByRail sums stats (as Stats returns them) per rail, as StatsByRail does: a caller that
// shows both reads the database once, and its two views agree.
func (p *Plugin) SumByRail(stats []QueueStats) []RailStats { return p.railTotals(stats) }

// railTotals sums stats per rail, as StatsByRail returns them.
func (p *Plugin) railTotals(stats []QueueStats) []RailStats {
	var out []RailStats
	index := map[string]int{}
	for _, name := range p.Rails() {
		index[name] = len(out)
		out = append(out, RailStats{Rail: name, Configured: true})
	}
	var others []string
	for _, s := range stats {
		if _, ok := index[s.Rail]; !ok {
			index[s.Rail] = -1
			others = append(others, s.Rail)
		}
	}
	slices.Sort(others)
	for _, name := range others {
		index[name] = len(out)
		out = append(out, RailStats{Rail: name})
	}
	for _, s := range stats {
		r := &out[index[s.Rail]]
		r.Pending += s.Pending
		r.Running += s.Running
		r.Due += s.Due
		r.Poisoned += s.Poisoned
		r.OldestDueAge = max(r.OldestDueAge, s.OldestDueAge)
	}
	return out
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

func sortStats(s []QueueStats) {
	slices.SortFunc(s, func(a, b QueueStats) int {
		return cmp.Or(strings.Compare(a.ConsumerType, b.ConsumerType), strings.Compare(a.Rail, b.Rail))
	})
}
