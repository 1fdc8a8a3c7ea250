package asyncmonolith

import (
	"context"
	"database/sql"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asyncmonolith/asyncmonolith/internal/dialect"
	"gorm.io/gorm"
)

// Inserting messages runs SQL built once per shape (by internal/dialect) straight on the
// connection (the caller's transaction), bypassing GORM's per-call reflection, as claims
// (claim.go) and completions (complete.go) do; everything else goes through GORM.

// statements are the plugin's hot-path SQL, in the dialect's syntax.
type statements struct {
	claims sync.Map                  // claimKey → *claimStatements
	leases atomic.Pointer[leasePlan] // of the registry state it names
	// setAside locks the locators of one consumer's messages due before a time (a paused
	// consumer's backlog): dialect.SetAsideLocked.
	setAside string
	inserts  sync.Map // insertKey → string

	// Prepared inserts (where the dialect wants them): statements on the plugin's *sql.DB,
	// which database/sql prepares once per connection.
	sqlDB      *sql.DB
	preparedMu sync.Mutex
	prepared   map[insertKey]*sql.Stmt
}

// maxPreparedInserts bounds the prepared insert statements (one per batch size seen);
// inserts of other sizes run unprepared.
const maxPreparedInserts = 32

// buildStatements renders the hot-path statements that do not depend on a batch's shape.
func (p *Plugin) buildStatements(db *gorm.DB) error {
	p.stmts = &statements{setAside: dialect.SetAsideLocked(p.dialect)}
	p.claimSQL(p.cfg.ProcessorBatchSize, p.leases(), claimFilter{})
	if p.dialect.PreparesInserts() {
		p.stmts.sqlDB, _ = db.ConnPool.(*sql.DB) // not under PrepareStmt mode, which prepares itself
	}
	return nil
}

// setAsideLimit bounds how many messages one trip of a breaker sets aside at once; later
// batches set aside the rest as they meet them.
const setAsideLimit = 10_000

// setAside moves the pending messages of consumerType due before until to until, without
// counting an attempt, in a transaction of its own. Claimed rows are left to their runs.
func (p *Plugin) setAside(ctx context.Context, consumerType string, until time.Time) (int, error) {
	tx := p.db.WithContext(ctx).Begin(p.dialect.ProcessorTxOptions())
	if tx.Error != nil {
		return 0, tx.Error
	}
	defer tx.Rollback()
	conn := tx.Statement.ConnPool
	rs, err := conn.QueryContext(ctx, p.stmts.setAside, consumerType, until.UnixMilli(), setAsideLimit)
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
	if err := p.updateLocated(ctx, conn, []string{"available_after"}, []any{until.UnixMilli()}, locs, 0); err != nil {
		return 0, err
	}
	return len(locs), tx.Commit().Error
}

type insertKey struct {
	rows  int
	trace bool
	dedup bool
	rail  bool // the rail column is written (some row is not on the default rail)
}

// insertSQL is the multi-row INSERT of n messages (dialect.InsertMessages), made once per
// shape.
func (p *Plugin) insertSQL(n int, trace, dedup, rail bool) string {
	key := insertKey{n, trace, dedup, rail}
	if s, ok := p.stmts.inserts.Load(key); ok {
		return s.(string)
	}
	s := dialect.InsertMessages(p.dialect, n, trace, dedup, rail)
	p.stmts.inserts.Store(key, s)
	return s
}

// execInsert writes rows on conn, insertBatchRows per statement.
func (p *Plugin) execInsert(ctx context.Context, conn gorm.ConnPool, rows []newRow) error {
	args := make([]any, 0, dialect.InsertParams(true, true)*min(len(rows), insertBatchRows))
	for start := 0; start < len(rows); start += insertBatchRows {
		chunk := rows[start:min(start+insertBatchRows, len(rows))]
		trace, dedup, rail := false, false, false
		for i := range chunk {
			trace = trace || chunk[i].TraceID != nil || chunk[i].SpanID != nil
			dedup = dedup || !chunk[i].freshID
			rail = rail || chunk[i].Rail != DefaultRail
		}
		args = args[:0]
		for i := range chunk {
			r := &chunk[i]
			args = append(args, r.ID, r.CreatedAt, r.AvailableAfter, r.ConsumerType, r.PayloadType, r.Payload, r.InsertID)
			if trace {
				args = append(args, r.TraceID, r.SpanID)
			}
			if rail {
				args = append(args, r.Rail)
			}
		}
		if err := p.execInsertSQL(ctx, conn, insertKey{len(chunk), trace, dedup, rail}, args); err != nil {
			return err
		}
	}
	return nil
}

// errForeignStmt is database/sql's refusal of a statement prepared on another *sql.DB (a
// transaction begun on a connection pool other than the plugin's, e.g. by a resolver
// plugin); such an insert runs unprepared.
const errForeignStmt = "sql: Tx.Stmt: statement from different database used"

// execInsertSQL runs the insert of key's shape on conn: prepared where the dialect wants it,
// the statement is ready and conn belongs to the plugin's pool; as a plain statement
// otherwise.
func (p *Plugin) execInsertSQL(ctx context.Context, conn gorm.ConnPool, key insertKey, args []any) error {
	q := p.insertSQL(key.rows, key.trace, key.dedup, key.rail)
	if stmt := p.preparedInsert(key, q); stmt != nil {
		switch c := conn.(type) {
		case *sql.Tx:
			// Prepared on the transaction's own connection the first time (database/sql
			// keeps it for the next transaction there), without waiting for the pool.
			_, err := c.StmtContext(ctx, stmt).ExecContext(ctx, args...)
			if err == nil || err.Error() != errForeignStmt {
				return err
			}
		case *sql.DB:
			if c == p.stmts.sqlDB {
				_, err := stmt.ExecContext(ctx, args...)
				return err
			}
		}
	}
	_, err := conn.ExecContext(ctx, q, args...)
	return err
}

// preparedInsert returns the prepared statement for key, or nil where inserts are not
// prepared (the dialect, PrepareStmt mode, the bound) or not yet. A statement is prepared
// on the pool in the background: the caller may hold the pool's only connection (SQLite
// is often run with one), and a prepare waiting for it would wait forever. Until it is
// ready, inserts of that shape run unprepared.
func (p *Plugin) preparedInsert(key insertKey, q string) *sql.Stmt {
	st := p.stmts
	if st.sqlDB == nil {
		return nil
	}
	st.preparedMu.Lock()
	defer st.preparedMu.Unlock()
	if stmt, ok := st.prepared[key]; ok || len(st.prepared) >= maxPreparedInserts {
		return stmt // nil while being prepared, or when no more shapes are kept
	}
	if st.prepared == nil {
		st.prepared = map[insertKey]*sql.Stmt{}
	}
	st.prepared[key] = nil // being prepared
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		stmt, err := st.sqlDB.PrepareContext(ctx, q)
		st.preparedMu.Lock()
		defer st.preparedMu.Unlock()
		if err != nil {
			delete(st.prepared, key) // try again with a later insert
			return
		}
		st.prepared[key] = stmt
	}()
	return nil
}
