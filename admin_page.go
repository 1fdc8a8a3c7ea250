package asyncmonolith

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"gorm.io/gorm"
)

// Keyset paging for dashboards and scripts: a page is read from the index after the last
// row of the previous page, so page 1,000 of a million-row table costs what page 1 costs
// (MessageFilter.Offset would read and skip every row before it).

// Page is one page of a keyset-paged listing.
type Page[T any] struct {
	Rows []T `json:"rows"`
	// Next is the cursor of the following page, or "" when this page is the last.
	Next string `json:"next"`
}

// pageCursor is a decoded cursor: the sort key of a page's last row.
type pageCursor struct {
	rail        string // messages: the rail, first in listOrder
	at, created int64
	id          string
}

// String encodes c as "at.created.id" (then ".rail" when the rail is not the default) with
// the id and rail in unpadded base64url, so that a cursor is plain ASCII whatever bytes
// they hold (a hand-written row may hold dots, slashes, NUL bytes or invalid UTF-8) and
// goes into a URL as it is.
func (c pageCursor) String() string {
	s := strconv.FormatInt(c.at, 10) + "." + strconv.FormatInt(c.created, 10) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(c.id))
	if c.rail != "" {
		s += "." + base64.RawURLEncoding.EncodeToString([]byte(c.rail))
	}
	return s
}

// cursor decodes s, failing with ErrInvalidOption when it is malformed or when its id is
// one that no row of p's database can hold (PostgreSQL text holds neither NUL bytes nor
// invalid UTF-8, and would refuse the query with an error of its own).
func (p *Plugin) cursor(s string) (pageCursor, error) {
	parts := strings.SplitN(s, ".", 4)
	if len(parts) < 3 || parts[2] == "" || (len(parts) == 4 && parts[3] == "") {
		return pageCursor{}, fmt.Errorf("%w: cursor %q", ErrInvalidOption, s)
	}
	at, err1 := strconv.ParseInt(parts[0], 10, 64)
	created, err2 := strconv.ParseInt(parts[1], 10, 64)
	id, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	var rail []byte
	var err4 error
	if len(parts) == 4 {
		rail, err4 = base64.RawURLEncoding.DecodeString(parts[3])
	}
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return pageCursor{}, fmt.Errorf("%w: cursor %q", ErrInvalidOption, s)
	}
	if !p.storable(string(id)) || !p.storable(string(rail)) {
		return pageCursor{}, fmt.Errorf("%w: cursor %q: its id or rail holds bytes PostgreSQL text cannot", ErrInvalidOption, s)
	}
	return pageCursor{rail: string(rail), at: at, created: created, id: string(id)}, nil
}

// keyset keeps the rows that sort after (op ">") or before ("<") vals in the order of cols.
func (p *Plugin) keyset(q *gorm.DB, op string, cols []string, vals ...any) *gorm.DB {
	cond, args := p.dialect.Keyset(cols, op, vals)
	return q.Where(cond, args...)
}

// filterMessages applies f's conditions (not its limit or offset) to a consumer_messages query.
func (p *Plugin) filterMessages(q *gorm.DB, f MessageFilter) *gorm.DB {
	now := p.now()
	q = p.whereIdentity(q, f)
	if f.OlderThan > 0 {
		q = q.Where("created_at <= ?", now.Add(-f.OlderThan).UnixMilli())
	}
	if f.Due != nil {
		if *f.Due {
			q = q.Where("available_after <= ?", now.UnixMilli())
		} else {
			q = q.Where("available_after > ?", now.UnixMilli())
		}
	}
	return q
}

// PageMessages returns one page of pending messages matching f, in fetch order (due
// first) rail by rail (the default rail first), starting after cursor ("" for the first page; Page.Next for the following
// one). f.Limit sizes the page; f.Offset is ignored. A malformed cursor fails with
// ErrInvalidOption. Rows with equal sort keys are neither skipped nor repeated across
// pages, whatever is inserted or deleted meanwhile; but a message that a processor claims
// or retries during a walk moves later in fetch order (its available_after is its lease's
// end, then its retry time), so a walk while processors run can see it twice, never miss it.
func (p *Plugin) PageMessages(ctx context.Context, f MessageFilter, cursor string) (Page[ConsumerMessage], error) {
	var page Page[ConsumerMessage]
	db, err := p.adminDB(ctx)
	if err != nil {
		return page, err
	}
	q := p.filterMessages(db.Model(&ConsumerMessage{}), f)
	if cursor != "" {
		c, err := p.cursor(cursor)
		if err != nil {
			return page, err
		}
		q = p.keyset(q, ">", []string{"rail", "available_after", "created_at", "id"}, c.rail, c.at, c.created, c.id)
	}
	n := f.limit()
	if err := readOnSource(q, func(tx *gorm.DB) error { return tx.Order(listOrder).Limit(n + 1).Find(&page.Rows).Error }); err != nil {
		return page, p.wrapDBError("page messages", err)
	}
	if len(page.Rows) > n {
		page.Rows = page.Rows[:n]
		last := page.Rows[n-1]
		page.Next = pageCursor{rail: last.Rail, at: last.AvailableAfter, created: last.CreatedAt, id: last.ID}.String()
	}
	return page, nil
}

// PagePoisoned returns one page of poisoned messages matching f, most recently poisoned
// first, starting after cursor ("" for the first page). f.Limit sizes the page.
func (p *Plugin) PagePoisoned(ctx context.Context, f MessageFilter, cursor string) (Page[PoisonedMessage], error) {
	var page Page[PoisonedMessage]
	db, err := p.adminDB(ctx)
	if err != nil {
		return page, err
	}
	q := p.filterPoisoned(db.Model(&PoisonedMessage{}), f)
	if cursor != "" {
		c, err := p.cursor(cursor)
		if err != nil {
			return page, err
		}
		q = p.keyset(q, "<", []string{"poisoned_at", "id"}, c.at, c.id)
	}
	n := f.limit()
	if err := readOnSource(q, func(tx *gorm.DB) error {
		return tx.Order("poisoned_at DESC, id DESC").Limit(n + 1).Find(&page.Rows).Error
	}); err != nil {
		return page, p.wrapDBError("page poisoned", err)
	}
	if len(page.Rows) > n {
		page.Rows = page.Rows[:n]
		last := page.Rows[n-1]
		page.Next = pageCursor{at: last.PoisonedAt, id: last.ID}.String()
	}
	return page, nil
}

// ScheduleFilter selects schedules for PageSchedules.
type ScheduleFilter struct {
	// Tag keeps the schedules with this tag ("" for all).
	Tag string
	// Limit sizes a page (100 when 0; at most 10,000), as MessageFilter.Limit does.
	Limit int
}

// PageSchedules returns one page of schedules matching f, soonest next run first,
// starting after cursor ("" for the first page; Page.Next for the following one). A
// malformed cursor fails with ErrInvalidOption.
func (p *Plugin) PageSchedules(ctx context.Context, f ScheduleFilter, cursor string) (Page[ScheduleInfo], error) {
	var page Page[ScheduleInfo]
	db, err := p.adminDB(ctx)
	if err != nil {
		return page, err
	}
	q := db.Model(&ScheduledMessage{})
	if err := p.checkTagFilter(f.Tag); err != nil {
		return page, err
	}
	if f.Tag != "" {
		q = q.Where("tag = ?", f.Tag)
	}
	if cursor != "" {
		c, err := p.cursor(cursor)
		if err != nil {
			return page, err
		}
		q = p.keyset(q, ">", []string{"available_after", "id"}, c.at, c.id)
	}
	n := MessageFilter{Limit: f.Limit}.limit()
	var rows []ScheduledMessage
	if err := readOnSource(q, func(tx *gorm.DB) error { return tx.Order("available_after, id").Limit(n + 1).Find(&rows).Error }); err != nil {
		return page, p.wrapDBError("page schedules", err)
	}
	if len(rows) > n {
		rows = rows[:n]
		page.Next = pageCursor{at: rows[n-1].AvailableAfter, id: rows[n-1].ID}.String()
	}
	page.Rows = scheduleInfos(rows)
	return page, nil
}

// CountMessages counts the pending messages matching f (its limit and offset ignored).
func (p *Plugin) CountMessages(ctx context.Context, f MessageFilter) (int64, error) {
	db, err := p.adminDB(ctx)
	if err != nil {
		return 0, err
	}
	var n int64
	if err := readOnSource(p.filterMessages(db.Model(&ConsumerMessage{}), f), func(tx *gorm.DB) error { return tx.Count(&n).Error }); err != nil {
		return 0, p.wrapDBError("count messages", err)
	}
	return n, nil
}

// CountPoisoned counts the poisoned messages matching f (its limit and offset ignored):
// for example what PurgePoisoned(f) would delete.
func (p *Plugin) CountPoisoned(ctx context.Context, f MessageFilter) (int64, error) {
	db, err := p.adminDB(ctx)
	if err != nil {
		return 0, err
	}
	var n int64
	if err := readOnSource(p.filterPoisoned(db.Model(&PoisonedMessage{}), f), func(tx *gorm.DB) error { return tx.Count(&n).Error }); err != nil {
		return 0, p.wrapDBError("count poisoned", err)
	}
	return n, nil
}

// GetMessage returns one pending (or running) message, or ErrMessageNotFound.
func (p *Plugin) GetMessage(ctx context.Context, id string) (ConsumerMessage, error) {
	return getByID[ConsumerMessage](ctx, p, id, "message")
}
