// Package dialect is the one seam where the three supported databases differ. The rest of
// the library asks a Dialect, chosen once from the GORM dialector, and never branches on a
// database name itself.
package dialect

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gorm.io/gorm"
)

// Dialect describes what differs between databases.
type Dialect interface {
	// Name is "postgres", "mysql" or "sqlite".
	Name() string
	// RowLocks reports whether SELECT … FOR UPDATE SKIP LOCKED is honoured; without it
	// only one processor may run.
	RowLocks() bool
	// LockFreeReadTx reports whether a transaction that only reads leaves writers alone:
	// false on SQLite, where BEGIN IMMEDIATE (the recommended _txlock) takes the database's
	// write lock.
	LockFreeReadTx() bool
	// TextStorable reports whether s can be stored in a text column and compared with one
	// (text.go).
	TextStorable(s string) bool
	// Keyset is the condition, with its arguments, keeping the rows that sort after (op
	// ">") or before ("<") vals in the order of cols, read as a range of an index on cols.
	Keyset(cols []string, op string, vals []any) (string, []any)
	// ProcessorTxOptions are the options of a processor's batch transaction.
	ProcessorTxOptions() *sql.TxOptions
	// Retryable reports whether err is a transient conflict (deadlock, lock wait
	// timeout, serialization failure, busy database) after which the transaction can be
	// retried as a whole.
	Retryable(err error) bool
	// DeleteByIDs returns a statement deleting the rows of table whose id is one of n
	// bound parameters.
	DeleteByIDs(table string, n int) string
	// Locator is the SQL expression a fetch selects (as text) to find each locked row
	// again cheaply in the same transaction.
	Locator() string
	// DeleteLocated returns the statement and arguments that delete rows of table by the
	// locators a claim returned. A non-zero lease fences it: only rows still claimed with
	// that lease (available_after = lease AND pending IS NULL) are deleted.
	DeleteLocated(table string, locators []string, lease int64) (string, []any)
	// UpdateLocated returns the statement and arguments that set columns to values on the
	// rows of table found by locators, fenced by a non-zero lease as DeleteLocated is. A
	// PerRow value sets its column row by row.
	UpdateLocated(table string, columns []string, values []any, locators []string, lease int64) (string, []any)
	// ClaimSQL wraps lockingSelect — the fetch's SELECT id, available_after … FOR UPDATE
	// SKIP LOCKED, whose last bound parameter is number params — in one statement that
	// leases the selected rows (pending = NULL, available_after = a lease end) and returns
	// them as the claim columns plus their new locator. The lease end is parameter params+1,
	// except for the consumer types of groups: group i is groups[i] consumer type
	// parameters followed by that group's lease end, numbered on from params+2. It returns
	// "" where a claim is a locking SELECT and an UPDATE in one transaction.
	ClaimSQL(lockingSelect string, params int, groups []int) string
	// UniqueViolation reports whether err is a unique-constraint violation.
	UniqueViolation(err error) bool
	// Placeholder is the i-th (1-based) bind parameter in the driver's native syntax.
	Placeholder(i int) string
	// Int64Placeholder is the i-th bind parameter where its type must be bigint (as a
	// CASE result, where PostgreSQL would infer text).
	Int64Placeholder(i int) string
	// DedupSuffix ends an INSERT into consumer_messages so that a row whose
	// (insert_id, consumer_type) is pending already is skipped without an error.
	DedupSuffix() string
	// PreparesInserts reports whether inserts should run as statements prepared once per
	// connection: true where the driver would otherwise parse every multi-row INSERT again
	// (go-sqlite3: a fifth of a 100-row ProduceBatch). pgx caches prepared statements
	// itself; go-sql-driver/mysql is used with interpolated parameters, and server-side
	// statements would count against max_prepared_stmt_count.
	PreparesInserts() bool
	// EnsureNotify installs what makes a commit of new messages wake processors in other
	// processes (PostgreSQL: a statement trigger calling pg_notify), without DDL when it
	// is there already. A no-op elsewhere.
	EnsureNotify(ctx context.Context, db *gorm.DB) error
	// EnsureExactNames makes the identifier columns (ids, insert ids, consumer and payload
	// types, tags) compare byte for byte, trailing spaces included, without DDL when they do
	// already. MySQL/MariaDB: a NO PAD binary collation. A no-op where the default
	// comparison is exact (PostgreSQL's deterministic collations, SQLite's BINARY).
	EnsureExactNames(ctx context.Context, db *gorm.DB) error
	// LockMigrate waits, in Migrate's transaction tx, until no other Migrate of the same
	// schema or database runs, and holds that until the returned unlock is called (before
	// tx ends) or tx ends.
	LockMigrate(ctx context.Context, tx *gorm.DB) (unlock func(), err error)
	// Listen blocks until ctx is done, calling wake for every commit of new messages that
	// the database reports, on one connection of the pool db. It returns ErrNoListen where
	// the database cannot report them, and where the pool has a single connection (the
	// listener would hold it for good and starve the application).
	Listen(ctx context.Context, db *sql.DB, wake func()) error
	// ListenDirect is Listen on a connection of its own, opened with dsn outside the pool
	// (the pool may go through a pooler that cannot relay notifications). The pool db
	// answers which channel to listen on. It returns ErrNoListen where the database cannot
	// report commits.
	ListenDirect(ctx context.Context, db *sql.DB, dsn string, wake func()) error
	// CheckListenDSN reports why dsn cannot serve ListenDirect (its text never appears in
	// the error: it may hold a password).
	CheckListenDSN(dsn string) error
}

// Unavailable reports whether err says the database could not be reached or used — a
// lost or refused connection, a server out of connections, a server shutting down — rather
// than that it refused a statement. Such an error says nothing about a message or its
// consumer.
func Unavailable(err error) bool {
	if err == nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false // a timeout or a cancellation (context.DeadlineExceeded is a net.Error too)
	}
	var ne net.Error
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.EOF) || mysqlInvalidConn(err) || errors.As(err, &ne) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	switch st := sqlState(err); {
	case strings.HasPrefix(st, "08"), st == "53300", st == "57P01", st == "57P02", st == "57P03":
		// connection exceptions, too_many_connections, admin/crash shutdown, cannot_connect_now
		return true
	}
	switch n, _ := mysqlErrorNumber(err); n {
	case 1040, 1053, 2006, 2013: // too many connections, server shutdown, gone away, lost connection
		return true
	}
	s := err.Error()
	return strings.Contains(s, "failed to connect to") || strings.Contains(s, "conn closed") ||
		strings.Contains(s, "connection reset by peer") || strings.Contains(s, "broken pipe")
}

// ErrNoListen reports a database without commit notifications: processors poll.
var ErrNoListen = errors.New("dialect: no commit notifications on this database")

var errListenDSN = errors.New("is for PostgreSQL only: this database has no LISTEN")

// poolHasSpare refuses to take a connection of a pool of one for a listener: it would hold
// it until Stop, and every query of the application would wait for it forever.
func poolHasSpare(db *sql.DB) error {
	if db.Stats().MaxOpenConnections == 1 {
		return fmt.Errorf("%w: the pool has one connection (SetMaxOpenConns(1)); a listener would hold it", ErrNoListen)
	}
	return nil
}

// deleteIn is DELETE … WHERE id IN (…).
func deleteIn(d Dialect, table string, n int) string {
	var b strings.Builder
	b.Grow(len(table) + 40 + 4*n)
	b.WriteString("DELETE FROM ")
	b.WriteString(table)
	b.WriteString(" WHERE id IN (")
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(d.Placeholder(i + 1))
	}
	b.WriteByte(')')
	return b.String()
}

func stringArgs(ss []string) []any {
	args := make([]any, len(ss))
	for i, s := range ss {
		args[i] = s
	}
	return args
}

// onConflictSkip skips a row whose insert id is pending already: the unique index is on
// (insert_id, consumer_type, pending), and pending is NULL on claimed rows, so a running
// message never conflicts.
const onConflictSkip = " ON CONFLICT (insert_id, consumer_type, pending) DO NOTHING"

// For returns the Dialect of db's dialector.
func For(db *gorm.DB) (Dialect, error) { return ForName(db.Dialector.Name()) }

// ForName returns the Dialect of the database called name (see Canonical).
func ForName(name string) (Dialect, error) {
	canonical, _ := Canonical(name)
	switch canonical {
	case "postgres":
		return postgres{}, nil
	case "mysql":
		return mysqlDialect{}, nil
	case "sqlite":
		return sqlite{}, nil
	default:
		return nil, fmt.Errorf("unsupported database %q (supported: %s)", name, strings.Join(Names, ", "))
	}
}

type postgres struct{}

func (postgres) Name() string                             { return "postgres" }
func (postgres) RowLocks() bool                           { return true }
func (postgres) LockFreeReadTx() bool                     { return true }
func (postgres) ProcessorTxOptions() *sql.TxOptions       { return nil }
func (d postgres) DeleteByIDs(table string, n int) string { return deleteIn(d, table, n) }
func (postgres) Placeholder(i int) string                 { return "$" + strconv.Itoa(i) }
func (postgres) Int64Placeholder(i int) string            { return "$" + strconv.Itoa(i) + "::bigint" }
func (postgres) DedupSuffix() string                      { return onConflictSkip }
func (postgres) PreparesInserts() bool                    { return false }

// Locator is the row's physical address. The fetch holds the rows' locks, so no other
// transaction can move them before the delete; deleting by ctid is a TID scan, whatever
// the planner's statistics (on a freshly filled, not yet analyzed table, `id IN (…)` was
// planned as a sequential scan: 4.1 ms per 100-row delete against 0.23 ms by ctid).
func (postgres) Locator() string { return "ctid::text" }

func (postgres) DeleteLocated(table string, locators []string, lease int64) (string, []any) {
	q := "DELETE FROM " + table + " WHERE ctid = ANY($1::tid[])"
	args := []any{tidArray(locators)}
	if lease != 0 {
		q += " AND available_after = $2 AND pending IS NULL"
		args = append(args, lease)
	}
	return q, args
}

// tidArray is locators as a PostgreSQL tid[] literal: one parameter for the whole batch.
func tidArray(locators []string) string {
	var b strings.Builder
	b.Grow(len(locators) * 12)
	b.WriteByte('{')
	for i, l := range locators {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		b.WriteString(l)
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

func (postgres) UpdateLocated(table string, columns []string, values []any, locators []string, lease int64) (string, []any) {
	var b strings.Builder
	b.WriteString("UPDATE " + table + " SET ")
	args := make([]any, 0, len(values)+3)
	for i, c := range columns {
		if i > 0 {
			b.WriteString(", ")
		}
		pgSetValue(&b, c, values[i], &args)
	}
	args = append(args, tidArray(locators))
	n := len(args)
	b.WriteString(" WHERE ctid = ANY($" + strconv.Itoa(n) + "::tid[])")
	if lease != 0 {
		b.WriteString(" AND available_after = $" + strconv.Itoa(n+1) + " AND pending IS NULL")
		args = append(args, lease)
	}
	return b.String(), args
}

// ClaimSQL is one round trip: the locking SELECT as a CTE, the UPDATE that leases its rows,
// RETURNING them with their due time from before the update and their new ctid (an update
// moves a row). It commits with synchronous_commit off, for its own transaction only: a
// claim that a server crash forgets leaves its messages pending, as if never claimed (runs
// of them then complete nothing: their fence finds no lease), and the claim, on the path
// of every message, does not wait for a WAL flush.
func (d postgres) ClaimSQL(lockingSelect string, params int, groups []int) string {
	lease := "$" + strconv.Itoa(params+1)
	if len(groups) > 0 {
		var b strings.Builder
		b.WriteString("CASE")
		next := params + 2
		for _, n := range groups {
			b.WriteString(" WHEN m.consumer_type IN (")
			for j := range n {
				if j > 0 {
					b.WriteString(", ")
				}
				b.WriteString(d.Placeholder(next))
				next++
			}
			b.WriteString(") THEN " + d.Int64Placeholder(next))
			next++
		}
		b.WriteString(" ELSE " + d.Int64Placeholder(params+1) + " END")
		lease = b.String()
	}
	return "WITH due AS (" + lockingSelect + ") UPDATE consumer_messages m SET available_after = " +
		lease + ", pending = NULL FROM due, (SELECT set_config('synchronous_commit', 'off', true)) AS async " +
		"WHERE m.id = due.id RETURNING " +
		"m.id, m.created_at, due.available_after, m.attempts, m.consumer_type, m.payload_type, m.payload, " +
		"NULLIF(m.insert_id, m.id), m.trace_id, m.span_id, m.snoozes, m.ctid::text"
}

func (postgres) UniqueViolation(err error) bool { return sqlState(err) == "23505" }

func (postgres) Retryable(err error) bool {
	switch sqlState(err) {
	case "40001", "40P01", "55P03": // serialization_failure, deadlock_detected, lock_not_available
		return true
	}
	return false
}

type mysqlDialect struct{}

func (mysqlDialect) EnsureNotify(context.Context, *gorm.DB) error  { return nil }
func (mysqlDialect) Listen(context.Context, *sql.DB, func()) error { return ErrNoListen }
func (mysqlDialect) ListenDirect(context.Context, *sql.DB, string, func()) error {
	return ErrNoListen
}
func (mysqlDialect) CheckListenDSN(string) error { return errListenDSN }

func (mysqlDialect) Name() string         { return "mysql" }
func (mysqlDialect) RowLocks() bool       { return true }
func (mysqlDialect) LockFreeReadTx() bool { return true }

// ProcessorTxOptions is READ COMMITTED: under InnoDB's default REPEATABLE READ, the locking
// read of a near-empty queue takes gap and next-key locks that block producers' inserts.
func (mysqlDialect) ProcessorTxOptions() *sql.TxOptions {
	return &sql.TxOptions{Isolation: sql.LevelReadCommitted}
}

// DeleteByIDs joins a derived table of the ids. InnoDB resolves `id IN (…)` on this
// varchar key as a range scan that also locks the record after each id; when two
// processors hold adjacent rows, their deletes deadlock (measured: 10,000 messages, two
// instances, deadlocks in most runs). The join looks each id up as a unique key and
// touches no other row — provided the ids are read first. Two processors' deletes of this
// form, with the queue's table first in the join, once deadlocked each waiting for a row of
// the other's batch (SHOW ENGINE INNODB STATUS), although EXPLAIN showed a primary-key
// lookup per id; STRAIGHT_JOIN and FORCE INDEX pin the join order and the access path.
func (mysqlDialect) DeleteByIDs(table string, n int) string {
	var b strings.Builder
	b.Grow(len(table) + 90 + 24*n)
	b.WriteString("DELETE t FROM ")
	writeIDTable(&b, n)
	b.WriteString(" STRAIGHT_JOIN ")
	b.WriteString(table)
	b.WriteString(" t FORCE INDEX (PRIMARY) ON t.id = d.id")
	return b.String()
}

// writeIDTable writes a derived table d of n bound ids.
func writeIDTable(b *strings.Builder, n int) {
	b.WriteByte('(')
	for i := range n {
		if i > 0 {
			b.WriteString(" UNION ALL ")
		}
		b.WriteString("SELECT ? AS id")
	}
	b.WriteString(") d")
}

func (mysqlDialect) Placeholder(int) string      { return "?" }
func (mysqlDialect) Int64Placeholder(int) string { return "?" }

func (mysqlDialect) Locator() string { return "id" }

// UpdateLocated joins a derived table of the ids, for the reason DeleteByIDs does.
func (mysqlDialect) UpdateLocated(table string, columns []string, values []any, locators []string, lease int64) (string, []any) {
	var b strings.Builder
	b.WriteString("UPDATE ")
	writeIDTable(&b, len(locators))
	b.WriteString(" STRAIGHT_JOIN " + table + " t FORCE INDEX (PRIMARY) ON t.id = d.id SET ")
	args := stringArgs(locators)
	ph := func(v any) string { args = append(args, v); return "?" }
	for i, c := range columns {
		if i > 0 {
			b.WriteString(", ")
		}
		setValue(&b, "t."+c, "t.id", values[i], ph)
	}
	if lease != 0 {
		b.WriteString(" WHERE t.available_after = ? AND t.pending IS NULL")
		args = append(args, lease)
	}
	return b.String(), args
}

func (d mysqlDialect) DeleteLocated(table string, locators []string, lease int64) (string, []any) {
	q, args := d.DeleteByIDs(table, len(locators)), stringArgs(locators)
	if lease != 0 {
		q += " WHERE t.available_after = ? AND t.pending IS NULL"
		args = append(args, lease)
	}
	return q, args
}

// ClaimSQL is "": MariaDB has no UPDATE … RETURNING.
func (mysqlDialect) ClaimSQL(string, int, []int) string { return "" }

func (mysqlDialect) UniqueViolation(err error) bool {
	n, ok := mysqlErrorNumber(err)
	return ok && n == 1062 // ER_DUP_ENTRY
}

// DedupSuffix is a no-op update: MySQL has no ON CONFLICT DO NOTHING, and INSERT IGNORE
// would also swallow errors that are not duplicates.
func (mysqlDialect) DedupSuffix() string { return " ON DUPLICATE KEY UPDATE id = id" }

func (mysqlDialect) PreparesInserts() bool { return false }

func (mysqlDialect) Retryable(err error) bool {
	switch n, _ := mysqlErrorNumber(err); n {
	case 1213, 1205: // ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT
		return true
	}
	return false
}

type sqlite struct{}

func (sqlite) EnsureNotify(context.Context, *gorm.DB) error     { return nil }
func (sqlite) EnsureExactNames(context.Context, *gorm.DB) error { return nil }
func (sqlite) ListenDirect(context.Context, *sql.DB, string, func()) error {
	return ErrNoListen
}
func (sqlite) CheckListenDSN(string) error { return errListenDSN }

// sqliteWatchInterval is how often the SQLite watcher reads PRAGMA data_version: a read of
// an in-memory counter, with no I/O and no lock.
const sqliteWatchInterval = 5 * time.Millisecond

// Listen watches PRAGMA data_version, which changes whenever another connection (another
// process, or this one's pool) commits, on one connection of the pool. With a pool of one
// connection it does not listen: it would starve the processors.
func (sqlite) Listen(ctx context.Context, db *sql.DB, wake func()) error {
	if err := poolHasSpare(db); err != nil {
		return err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	var last int64
	if err := conn.QueryRowContext(ctx, "PRAGMA data_version").Scan(&last); err != nil {
		return err
	}
	wake() // commits made before the first reading (at start, or during a restart) were not seen
	tick := time.NewTicker(sqliteWatchInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		var v int64
		if err := conn.QueryRowContext(ctx, "PRAGMA data_version").Scan(&v); err != nil {
			return err
		}
		if v != last {
			last = v
			wake()
		}
	}
}

func (sqlite) Name() string                       { return "sqlite" }
func (sqlite) RowLocks() bool                     { return false }
func (sqlite) LockFreeReadTx() bool               { return false }
func (sqlite) ProcessorTxOptions() *sql.TxOptions { return nil }

func (d sqlite) DeleteByIDs(table string, n int) string { return deleteIn(d, table, n) }
func (sqlite) Placeholder(int) string                   { return "?" }
func (sqlite) Int64Placeholder(int) string              { return "?" }
func (sqlite) DedupSuffix() string                      { return onConflictSkip }
func (sqlite) PreparesInserts() bool                    { return true }
func (sqlite) Locator() string                          { return "id" }

func (sqlite) UpdateLocated(table string, columns []string, values []any, locators []string, lease int64) (string, []any) {
	var b strings.Builder
	b.WriteString("UPDATE " + table + " SET ")
	var args []any
	ph := func(v any) string { args = append(args, v); return "?" }
	for i, c := range columns {
		if i > 0 {
			b.WriteString(", ")
		}
		setValue(&b, c, "id", values[i], ph)
	}
	b.WriteString(" WHERE id IN (")
	for i := range locators {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('?')
	}
	b.WriteByte(')')
	args = append(args, stringArgs(locators)...)
	if lease != 0 {
		b.WriteString(" AND available_after = ? AND pending IS NULL")
		args = append(args, lease)
	}
	return b.String(), args
}

func (d sqlite) DeleteLocated(table string, locators []string, lease int64) (string, []any) {
	q, args := d.DeleteByIDs(table, len(locators)), stringArgs(locators)
	if lease != 0 {
		q += " AND available_after = ? AND pending IS NULL"
		args = append(args, lease)
	}
	return q, args
}

// ClaimSQL is "": SQLite's UPDATE … RETURNING cannot return a row's values from before the
// update (its due time). The claim's transaction is short, so it holds the write lock only
// for a SELECT and an UPDATE.
func (sqlite) ClaimSQL(string, int, []int) string { return "" }

// UniqueViolation matches by text, as Retryable does.
func (sqlite) UniqueViolation(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// Retryable matches SQLITE_BUSY and SQLITE_LOCKED by text, which keeps the cgo driver out
// of builds that do not use SQLite.
func (sqlite) Retryable(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "database is locked") || strings.Contains(s, "database table is locked") ||
		strings.Contains(s, "SQLITE_BUSY")
}
