package asyncmonolith

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asyncmonolith/asyncmonolith/internal/dialect"
	"gorm.io/gorm"
)

// messageTx is the connection behind Message.Tx: a transaction of the message's own,
// begun at the consumer's first statement, that commits together with the deletion of its
// message (finish) — only while the message's lease is still this run's — or rolls back
// when the consumer fails. A consumer that never uses Message.Tx holds no connection, and
// concurrent consumers never share a transaction or a savepoint stack.
type messageTx struct {
	p *Plugin
	// parent and deadline make the transaction's context when it begins: it outlives the
	// consumer's by AbandonGrace and the lease margin, so the completion can still run
	// after a consumer that used its whole timeout; a hard stop (parent) cancels it, which
	// rolls the transaction back.
	parent   context.Context
	deadline time.Time

	mu     sync.Mutex
	txCtx  context.Context
	cancel context.CancelFunc // set with txCtx; guarded by mu, and called by abandon via stop
	tx     txHandle           // nil until the first statement
	conn_  *sql.Conn          // tx's kept connection (see txConns), if any
	err    error              // the begin failed: every statement reports it
	closed atomic.Bool
	stop   atomic.Pointer[context.CancelFunc] // cancel, for abandon (which must not wait for mu)
	slot   atomic.Bool                        // holds one of the plugin's Message.Tx slots
}

var (
	_ gorm.ConnPool    = (*messageTx)(nil)
	_ gorm.TxCommitter = (*messageTx)(nil)
)

// conn returns the transaction's connection, beginning it if needed (after waiting, with
// ctx, for one of the plugin's Message.Tx slots); m.mu is held.
func (m *messageTx) conn(ctx context.Context) (gorm.ConnPool, error) {
	if m.closed.Load() {
		return nil, ErrConsumerAbandoned
	}
	if m.tx == nil && m.err == nil {
		if err := m.p.txConns.acquire(ctx); err != nil {
			return nil, err
		}
		m.slot.Store(true)
		// The transaction outlives the consumer's context (txCtx), but waiting for a pooled
		// connection to begin it must end with the statement's: a consumer that honours its
		// context would otherwise stay blocked here past its timeout, and be abandoned.
		txCtx, cancelTx := withDeadline(m.p.cfg.Clock, m.parent, m.deadline)
		m.txCtx, m.cancel = context.WithCancel(txCtx)
		cancelBegin := m.cancel
		m.cancel = func() { cancelBegin(); cancelTx() }
		m.stop.Store(&m.cancel)
		if m.closed.Load() { // abandoned meanwhile: abandon may have run before the slot was marked held
			m.cancel()
			m.freeSlot()
			return nil, ErrConsumerAbandoned
		}
		endWait := context.AfterFunc(ctx, cancelBegin)
		tx, c, err := m.p.txConns.begin(m.txCtx, m.p.dialect.ProcessorTxOptions())
		switch {
		case !endWait():
			// The statement's context ended during the begin: a transaction begun on the
			// cancelled context is rolled back already.
			if tx != nil {
				_ = tx.Rollback()
			}
			m.p.txConns.put(c, false)
			m.err = fmt.Errorf("asyncmonolith: begin Message.Tx: waiting for a connection: %w", context.Cause(ctx))
		case err != nil:
			m.err = fmt.Errorf("asyncmonolith: begin Message.Tx: %w", err)
		default:
			m.tx, m.conn_ = tx, c
		}
	}
	if m.err != nil {
		return nil, m.err
	}
	return m.tx, nil
}

func (m *messageTx) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.conn(ctx)
	if err != nil {
		return nil, err
	}
	return c.PrepareContext(ctx, query)
}

func (m *messageTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.conn(ctx)
	if err != nil {
		return nil, err
	}
	return c.ExecContext(ctx, query, args...)
}

func (m *messageTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.conn(ctx)
	if err != nil {
		return nil, err
	}
	return c.QueryContext(ctx, query, args...)
}

func (m *messageTx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.conn(ctx)
	if err != nil {
		// *sql.Row cannot carry an error of ours: run the query on a context that is done
		// with err, so that Scan reports it. (database/sql reports ctx.Err(), not a
		// cancellation's cause: a plain cancelled context would make every failure here a
		// bare context.Canceled.)
		if sqlDB, dbErr := m.p.db.DB(); dbErr == nil {
			return sqlDB.QueryRowContext(failedContext{ctx, fmt.Errorf("%w (%w)", err, context.Canceled)}, query, args...)
		}
		dead, cancel := context.WithCancelCause(ctx)
		cancel(err)
		return m.p.db.Statement.ConnPool.QueryRowContext(dead, query, args...)
	}
	return c.QueryRowContext(ctx, query, args...)
}

// Commit refuses: the processor commits Message.Tx with the message's completion.
func (m *messageTx) Commit() error { return ErrTxManaged }

// Rollback refuses: return an error from Consume to roll back the consumer's writes.
func (m *messageTx) Rollback() error { return ErrTxManaged }

// begun reports whether the consumer used Message.Tx.
func (m *messageTx) begun() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tx != nil || m.err != nil
}

// abandon closes Message.Tx to a consumer that outlived its timeout, without waiting for
// a statement it may be stuck in: cancelling the context rolls the transaction back.
func (m *messageTx) abandon() {
	m.closed.Store(true)
	if c := m.stop.Load(); c != nil {
		(*c)()
	}
	m.freeSlot()
	go func() { // once the stuck statement has returned (its context is cancelled)
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.tx != nil {
			_ = m.tx.Rollback()
		}
		m.p.txConns.put(m.conn_, false)
		m.tx, m.conn_ = nil, nil
	}()
}

// freeSlot gives the transaction's slot back, once.
func (m *messageTx) freeSlot() {
	if m.slot.CompareAndSwap(true, false) {
		m.p.txConns.release()
	}
}

// end gives the transaction's connection back after its commit or rollback; m.mu is held.
func (m *messageTx) end(err error) {
	m.p.txConns.put(m.conn_, err == nil)
	m.tx, m.conn_ = nil, nil
}

// ending closes the handle as its run ends (m.mu is held); the function it returns, to be
// deferred, cancels the transaction's context and gives its slot back.
func (m *messageTx) ending() func() {
	m.closed.Store(true)
	return func() {
		if m.cancel != nil {
			m.cancel()
		}
		m.freeSlot()
	}
}

// rollback ends Message.Tx after a failed run. It reports whether the transaction's
// connection was lost (or never made): the database failed the run, not its consumer.
func (m *messageTx) rollback() (lost bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.ending()()
	if m.err != nil {
		return dialect.Unavailable(m.err)
	}
	if m.tx != nil {
		err := m.tx.Rollback()
		m.end(err)
		if err != nil && dialect.Unavailable(err) {
			return true
		}
	}
	return false
}

// finish completes a successful run whose consumer used Message.Tx: the message is deleted
// in the consumer's transaction, fenced by its lease, and the transaction commits. It
// returns ErrLeaseLost (after rolling back) when the lease was no longer this run's.
func (m *messageTx) finish(lease int64, locator string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.ending()()
	if m.err != nil {
		return m.err
	}
	if m.tx == nil {
		return ErrConsumerAbandoned
	}
	q, args := m.p.dialect.DeleteLocated("consumer_messages", []string{locator}, lease)
	res, err := m.tx.ExecContext(m.txCtx, q, args...)
	if err != nil {
		m.end(m.tx.Rollback())
		return fmt.Errorf("asyncmonolith: complete message: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		m.end(m.tx.Rollback())
		return ErrLeaseLost
	}
	if err := m.tx.Commit(); err != nil {
		m.end(err)
		return fmt.Errorf("asyncmonolith: commit Message.Tx: %w", err)
	}
	m.end(nil)
	return nil
}

// failedContext is a context that is done, with err (which wraps context.Canceled).
type failedContext struct {
	context.Context
	err error
}

var closedDone = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (c failedContext) Done() <-chan struct{} { return closedDone }
func (c failedContext) Err() error            { return c.err }
