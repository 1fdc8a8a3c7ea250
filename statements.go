package asyncmonolith

import (
	"context"
	"database/sql"
	"strings"
	"sync"
	"time"

	"gorm.io/gorm"
)

// The hot paths — fetching a batch, inserting messages, deleting completed ones — run
// prepared-once SQL straight on the connection (the caller's transaction or the batch's),
// bypassing GORM's per-call reflection; everything else goes through GORM. The fetch
// statement itself is built by GORM, with clause.Locking, once at Initialize.

// messageColumns is the column order of fetched and inserted rows.
const messageColumns = "id, created_at, available_after, attempts, consumer_type, payload_type, payload, insert_id, trace_id, span_id"

// statements are the plugin's hot-path SQL, in the dialect's syntax.
type statements struct {
	fetch     string
	fetchVars []any // fetchVars[0] is the due time; the rest (the limit, where bound) are fixed
	// setAside locks the locators of one consumer's messages due before a time (a paused
	// consumer's backlog); setAsideVars[0] is the consumer type, [1] the time.
	setAside     string
	setAsideVars []any
	inserts      sync.Map
}

// buildStatements renders the fetch with GORM's statement builder in dry-run mode.
func (p *Plugin) buildStatements(db *gorm.DB) error {
	var rows []ConsumerMessage
	stmt := db.Session(&gorm.Session{DryRun: true, NewDB: true}).
		Select(messageColumns+", "+p.dialect.Locator()).Clauses(skipLocked).
		Where("available_after <= ?", int64(0)).Order(fetchOrder).Limit(p.cfg.ProcessorBatchSize).
		Find(&rows).Statement
	if stmt.Error != nil {
		return stmt.Error
	}
	p.stmts = &statements{fetch: stmt.SQL.String(), fetchVars: append([]any(nil), stmt.Vars...)}
	var locs []string
	stmt = db.Session(&gorm.Session{DryRun: true, NewDB: true}).Model(&ConsumerMessage{}).
		Select(p.dialect.Locator()).Clauses(skipLocked).
		Where("consumer_type = ? AND available_after < ?", "", int64(0)).Limit(setAsideLimit).
		Find(&locs).Statement
	if stmt.Error != nil {
		return stmt.Error
	}
	p.stmts.setAside, p.stmts.setAsideVars = stmt.SQL.String(), append([]any(nil), stmt.Vars...)
	return nil
}

// setAsideLimit bounds how many messages one trip of a breaker sets aside at once; later
// batches set aside the rest as they meet them.
const setAsideLimit = 10_000

// setAside moves the messages of consumerType due before until to until, without counting
// an attempt, in a transaction of its own. Rows other processors hold are skipped: they
// are set aside by the batch that holds them.
func (p *Plugin) setAside(ctx context.Context, consumerType string, until time.Time) (int, error) {
	tx := p.db.WithContext(ctx).Begin(p.dialect.ProcessorTxOptions())
	if tx.Error != nil {
		return 0, tx.Error
	}
	defer tx.Rollback()
	conn := tx.Statement.ConnPool
	vars := append([]any(nil), p.stmts.setAsideVars...)
	vars[0], vars[1] = consumerType, until.UnixMilli()
	rs, err := conn.QueryContext(ctx, p.stmts.setAside, vars...)
	if err != nil {
		return 0, err
	}
	var locs []string
	for rs.Next() {
		var l string
		if err := rs.Scan(&l); err != nil {
			rs.Close()
			return 0, err
		}
		locs = append(locs, l)
	}
	rs.Close()
	if err := rs.Err(); err != nil {
		return 0, err
	}
	if err := p.updateLocated(ctx, conn, []string{"available_after"}, []any{until.UnixMilli()}, locs); err != nil {
		return 0, err
	}
	return len(locs), tx.Commit().Error
}

// insertColumnsNoTrace is messageColumns without the trace columns, for the common case
// of messages produced outside a trace (fewer parameters to encode).
const insertColumnsNoTrace = "id, created_at, available_after, attempts, consumer_type, payload_type, payload, insert_id"

// attemptsColumn is the position of attempts in the insert columns.
const attemptsColumn = 3

type insertKey struct {
	rows  int
	trace bool
	dedup bool
}

// insertSQL is the multi-row INSERT of n messages; with dedup it skips pending
// duplicates, with trace it includes the trace columns. Attempts are 0, written as a
// literal: every inserted message starts afresh, and one parameter less per row is
// measurably cheaper to encode and bind.
func (p *Plugin) insertSQL(n int, trace, dedup bool) string {
	key := insertKey{n, trace, dedup}
	if s, ok := p.stmts.inserts.Load(key); ok {
		return s.(string)
	}
	cols, per := insertColumnsNoTrace, 8
	if trace {
		cols, per = messageColumns, 10
	}
	var b strings.Builder
	b.WriteString("INSERT INTO consumer_messages (")
	b.WriteString(cols)
	b.WriteString(") VALUES ")
	k := 1
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('(')
		for j := range per {
			if j > 0 {
				b.WriteByte(',')
			}
			if j == attemptsColumn {
				b.WriteByte('0')
				continue
			}
			b.WriteString(p.dialect.Placeholder(k))
			k++
		}
		b.WriteByte(')')
	}
	if dedup {
		b.WriteString(p.dialect.DedupSuffix())
	}
	s := b.String()
	p.stmts.inserts.Store(key, s)
	return s
}

// execInsert writes rows on conn, insertBatchRows per statement.
func (p *Plugin) execInsert(ctx context.Context, conn gorm.ConnPool, rows []ConsumerMessage) error {
	args := make([]any, 0, 9*min(len(rows), insertBatchRows))
	for start := 0; start < len(rows); start += insertBatchRows {
		chunk := rows[start:min(start+insertBatchRows, len(rows))]
		trace, dedup := false, false
		for i := range chunk {
			trace = trace || chunk[i].TraceID != nil || chunk[i].SpanID != nil
			dedup = dedup || !chunk[i].freshID
		}
		args = args[:0]
		for i := range chunk {
			r := &chunk[i]
			args = append(args, r.ID, r.CreatedAt, r.AvailableAfter, r.ConsumerType, r.PayloadType, r.Payload, r.InsertID)
			if trace {
				args = append(args, r.TraceID, r.SpanID)
			}
		}
		if _, err := conn.ExecContext(ctx, p.insertSQL(len(chunk), trace, dedup), args...); err != nil {
			return err
		}
	}
	return nil
}

// fetch locks and reads one batch of due messages on the batch transaction's connection,
// with each row's locator (see dialect.Locator).
func (p *Plugin) fetch(ctx context.Context, conn gorm.ConnPool, now int64) ([]ConsumerMessage, []string, error) {
	vars := append([]any(nil), p.stmts.fetchVars...)
	vars[0] = now
	rs, err := conn.QueryContext(ctx, p.stmts.fetch, vars...)
	if err != nil {
		return nil, nil, err
	}
	defer rs.Close()
	out := make([]ConsumerMessage, 0, p.cfg.ProcessorBatchSize)
	locators := make([]string, 0, p.cfg.ProcessorBatchSize)
	for rs.Next() {
		var m ConsumerMessage
		var trace, span sql.NullString
		var loc string
		if err := rs.Scan(&m.ID, &m.CreatedAt, &m.AvailableAfter, &m.Attempts, &m.ConsumerType, &m.PayloadType,
			&m.Payload, &m.InsertID, &trace, &span, &loc); err != nil {
			return nil, nil, err
		}
		if trace.Valid {
			m.TraceID = &trace.String
		}
		if span.Valid {
			m.SpanID = &span.String
		}
		out = append(out, m)
		locators = append(locators, loc)
	}
	return out, locators, rs.Err()
}

// updateLocated sets columns to values on the messages found by locators, on conn, at most
// insertBatchRows per statement.
func (p *Plugin) updateLocated(ctx context.Context, conn gorm.ConnPool, columns []string, values []any, locators []string) error {
	for start := 0; start < len(locators); start += insertBatchRows {
		q, args := p.dialect.UpdateLocated("consumer_messages", columns, values, locators[start:min(start+insertBatchRows, len(locators))])
		if _, err := conn.ExecContext(ctx, q, args...); err != nil {
			return err
		}
	}
	return nil
}

// deleteMessages deletes fetched messages by their locators on conn.
func (p *Plugin) deleteMessages(ctx context.Context, conn gorm.ConnPool, locators []string) error {
	q, args := p.dialect.DeleteLocated("consumer_messages", locators)
	_, err := conn.ExecContext(ctx, q, args...)
	return err
}
