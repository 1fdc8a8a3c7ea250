package asyncmonolith

import (
	"context"
	"database/sql"
	"strings"
	"sync"

	"github.com/asyncmonolith/asyncmonolith/internal/dialect"
	"gorm.io/gorm"
)

// GORM has no commit callback, so a buffer cannot see whether the transaction its
// messages were flushed into committed: GORM's default transaction, but also a
// db.Transaction, Begin or CreateInBatches run on the producing session, retried after a
// rollback, or a savepoint rolled back inside it. The session a buffered Produce returns
// therefore carries a watchedPool: every transaction begun on it is a watchedTx, which
// puts the messages flushed into it back in their buffer when it (or the savepoint they
// were written under) rolls back.

// watchedPool is the connection pool of a session holding buffered messages.
type watchedPool struct {
	gorm.ConnPool // *sql.DB, *gorm.PreparedStmtDB, …
}

var (
	_ gorm.ConnPoolBeginner = (*watchedPool)(nil)
	_ gorm.GetDBConnector   = (*watchedPool)(nil)
	_ gorm.Tx               = (*watchedTx)(nil)
	_ gorm.GetDBConnector   = (*watchedTx)(nil)
)

// watchPool makes the transactions begun on s watched.
func watchPool(s *gorm.DB) {
	switch s.Statement.ConnPool.(type) {
	case *watchedPool, gorm.TxCommitter, nil:
		return
	}
	s.Statement.ConnPool = &watchedPool{ConnPool: s.Statement.ConnPool}
}

// watchedOf returns the watchedTx behind conn, or nil.
func watchedOf(conn gorm.ConnPool) *watchedTx {
	if pt, ok := conn.(*gorm.PreparedStmtTX); ok {
		conn = pt.Tx // a PrepareStmt session opened on a watched transaction
	}
	w, _ := conn.(*watchedTx)
	return w
}

// BeginTx begins a transaction on the pool, as gorm.DB.Begin would, and watches it.
func (p *watchedPool) BeginTx(ctx context.Context, opts *sql.TxOptions) (gorm.ConnPool, error) {
	var tx gorm.ConnPool
	switch b := p.ConnPool.(type) {
	case gorm.TxBeginner:
		sqlTx, err := b.BeginTx(ctx, opts)
		if err != nil {
			return nil, err
		}
		tx = sqlTx
	case gorm.ConnPoolBeginner:
		t, err := b.BeginTx(ctx, opts)
		if err != nil {
			return nil, err
		}
		tx = t
	default:
		return nil, gorm.ErrInvalidTransaction
	}
	return &watchedTx{ConnPool: tx, pool: p}, nil
}

// GetDBConn returns the *sql.DB under the pool, for gorm.DB.DB.
func (p *watchedPool) GetDBConn() (*sql.DB, error) { return sqlDBOf(p.ConnPool) }

func sqlDBOf(c gorm.ConnPool) (*sql.DB, error) {
	switch c := c.(type) {
	case *sql.DB:
		return c, nil
	case gorm.GetDBConnector:
		return c.GetDBConn()
	}
	return nil, gorm.ErrInvalidDB
}

// watchedTx is a transaction begun on a watchedPool.
type watchedTx struct {
	gorm.ConnPool // *sql.Tx, *gorm.PreparedStmtTX, …
	pool          *watchedPool

	mu      sync.Mutex
	plugin  *Plugin
	flushed []flushed       // in the order they were written
	marks   []savepointMark // open savepoints, outermost first
}

// savepointMark is a savepoint and how many flushes preceded it.
type savepointMark struct {
	name string
	n    int
}

// track records rows of b written in t.
func (t *watchedTx) track(p *Plugin, b *buffer, rows []newRow) {
	t.mu.Lock()
	t.plugin = p
	t.flushed = append(t.flushed, flushed{b, rows})
	t.mu.Unlock()
}

// putBackFrom returns the rows flushed since the i-th flush to their buffers; t.mu is held.
func (t *watchedTx) putBackFrom(i int) {
	for j := len(t.flushed) - 1; j >= i; j-- { // last first: putBack prepends
		t.flushed[j].b.putBack(t.flushed[j].rows)
	}
	t.flushed = t.flushed[:i]
}

// settle ends the watch: committed rows are done (and wake the processors), the rows of a
// rolled-back or failed transaction go back to their buffers. A COMMIT whose outcome is
// unknown (the connection was lost during it) counts as failed.
func (t *watchedTx) settle(committed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if committed {
		if len(t.flushed) > 0 && t.plugin != nil {
			t.plugin.wake.Notify()
		}
		t.flushed = nil
	} else {
		t.putBackFrom(0)
	}
	t.marks = nil
}

// Commit commits the transaction and settles the messages written in it.
func (t *watchedTx) Commit() error {
	err := t.ConnPool.(gorm.TxCommitter).Commit()
	t.settle(err == nil)
	return err
}

// Rollback rolls the transaction back and returns the messages written in it to their buffers.
func (t *watchedTx) Rollback() error {
	err := t.ConnPool.(gorm.TxCommitter).Rollback()
	t.settle(false)
	return err
}

// StmtContext binds stmt to the transaction (gorm.Tx, which PrepareStmt sessions need).
func (t *watchedTx) StmtContext(ctx context.Context, stmt *sql.Stmt) *sql.Stmt {
	if s, ok := t.ConnPool.(interface {
		StmtContext(context.Context, *sql.Stmt) *sql.Stmt
	}); ok {
		return s.StmtContext(ctx, stmt)
	}
	return stmt
}

// GetDBConn returns the *sql.DB the transaction was begun on, for gorm.DB.DB.
func (t *watchedTx) GetDBConn() (*sql.DB, error) { return t.pool.GetDBConn() }

// ExecContext runs query in the transaction and follows the savepoints it takes, rolls
// back to and releases (GORM's nested Transaction issues them through Exec).
func (t *watchedTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	op, name := dialect.ParseSavepoint(query)
	conn := t.ConnPool
	if pt, ok := conn.(*gorm.PreparedStmtTX); ok && op != dialect.SavepointNone {
		conn = pt.Tx // as gorm.DB.SavePoint does: MySQL cannot prepare savepoint statements
	}
	res, err := conn.ExecContext(ctx, query, args...)
	if err != nil || op == dialect.SavepointNone {
		return res, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch op {
	case dialect.SavepointTake:
		t.marks = append(t.marks, savepointMark{name, len(t.flushed)})
	case dialect.SavepointRollback, dialect.SavepointRelease:
		for i := len(t.marks) - 1; i >= 0; i-- {
			if !strings.EqualFold(t.marks[i].name, name) {
				continue
			}
			if op == dialect.SavepointRollback {
				t.putBackFrom(t.marks[i].n)
				t.marks = t.marks[:i+1] // ROLLBACK TO keeps the savepoint itself
			} else {
				t.marks = t.marks[:i]
			}
			break
		}
	}
	return res, nil
}
