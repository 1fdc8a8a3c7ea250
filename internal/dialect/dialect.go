// Package dialect is the one seam where the three supported databases differ. The rest of
// the library asks a Dialect, chosen once from the GORM dialector, and never branches on a
// database name itself.
package dialect

import (
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/go-sql-driver/mysql"
	"gorm.io/gorm"
)

// Dialect describes what differs between databases.
type Dialect interface {
	// Name is "postgres", "mysql" or "sqlite".
	Name() string
	// RowLocks reports whether SELECT … FOR UPDATE SKIP LOCKED is honoured; without it
	// only one processor may run.
	RowLocks() bool
	// ProcessorTxOptions are the options of a processor's batch transaction.
	ProcessorTxOptions() *sql.TxOptions
	// Retryable reports whether err is a transient conflict (deadlock, lock wait
	// timeout, serialization failure, busy database) after which the transaction can be
	// retried as a whole.
	Retryable(err error) bool
	// DeleteByIDs returns a statement deleting the rows of table whose id is one of n
	// bound parameters.
	DeleteByIDs(table string, n int) string
}

// deleteIn is DELETE … WHERE id IN (?, …).
func deleteIn(table string, n int) string {
	var b strings.Builder
	b.Grow(len(table) + 40 + 2*n)
	b.WriteString("DELETE FROM ")
	b.WriteString(table)
	b.WriteString(" WHERE id IN (")
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('?')
	}
	b.WriteByte(')')
	return b.String()
}

// For returns the Dialect of db's dialector.
func For(db *gorm.DB) (Dialect, error) {
	switch name := db.Dialector.Name(); name {
	case "postgres":
		return postgres{}, nil
	case "mysql":
		return mysqlDialect{}, nil
	case "sqlite", "sqlite3":
		return sqlite{}, nil
	default:
		return nil, fmt.Errorf("unsupported database %q (supported: postgres, mysql, sqlite)", name)
	}
}

type postgres struct{}

func (postgres) Name() string                           { return "postgres" }
func (postgres) RowLocks() bool                         { return true }
func (postgres) ProcessorTxOptions() *sql.TxOptions     { return nil }
func (postgres) DeleteByIDs(table string, n int) string { return deleteIn(table, n) }

func (postgres) Retryable(err error) bool {
	// pgconn.PgError exposes SQLState(); matching on the method keeps pgx out of this package.
	var st interface{ SQLState() string }
	if errors.As(err, &st) {
		switch st.SQLState() {
		case "40001", "40P01", "55P03": // serialization_failure, deadlock_detected, lock_not_available
			return true
		}
	}
	return false
}

type mysqlDialect struct{}

func (mysqlDialect) Name() string   { return "mysql" }
func (mysqlDialect) RowLocks() bool { return true }

// ProcessorTxOptions is READ COMMITTED: under InnoDB's default REPEATABLE READ, the locking
// read of a near-empty queue takes gap and next-key locks that block producers' inserts.
func (mysqlDialect) ProcessorTxOptions() *sql.TxOptions {
	return &sql.TxOptions{Isolation: sql.LevelReadCommitted}
}

// DeleteByIDs joins a derived table of the ids. InnoDB resolves `id IN (…)` on this
// varchar key as a range scan that also locks the record after each id; when two
// processors hold adjacent rows, their deletes deadlock (measured: 10,000 messages, two
// instances, deadlocks in most runs). The join looks each id up as a unique key and
// touches no other row.
func (mysqlDialect) DeleteByIDs(table string, n int) string {
	var b strings.Builder
	b.Grow(len(table) + 60 + 24*n)
	b.WriteString("DELETE t FROM ")
	b.WriteString(table)
	b.WriteString(" t JOIN (")
	for i := range n {
		if i > 0 {
			b.WriteString(" UNION ALL ")
		}
		b.WriteString("SELECT ? AS id")
	}
	b.WriteString(") d ON t.id = d.id")
	return b.String()
}

func (mysqlDialect) Retryable(err error) bool {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case 1213, 1205: // ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT
			return true
		}
	}
	return false
}

type sqlite struct{}

func (sqlite) Name() string                       { return "sqlite" }
func (sqlite) RowLocks() bool                     { return false }
func (sqlite) ProcessorTxOptions() *sql.TxOptions { return nil }

// Retryable matches SQLITE_BUSY and SQLITE_LOCKED by text, which keeps the cgo driver out
// of builds that do not use SQLite.
func (sqlite) DeleteByIDs(table string, n int) string { return deleteIn(table, n) }

func (sqlite) Retryable(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "database is locked") || strings.Contains(s, "database table is locked") ||
		strings.Contains(s, "SQLITE_BUSY")
}
