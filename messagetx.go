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
	tx     *gorm.DB           // nil until the first statement
	err    error              // the begin failed: every statement reports it
	closed atomic.Bool
	stop   atomic.Pointer[context.CancelFunc] // cancel, for abandon (which must not wait for mu)
	slot   atomic.Bool                        // holds one of the plugin's txSlots
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
		select {
		case m.p.txSlots <- struct{}{}:
			m.slot.Store(true)
		case <-ctx.Done():
			return nil, fmt.Errorf("asyncmonolith: waiting for a Message.Tx slot (Config.MaxMessageTxs): %w", ctx.Err())
		}
		m.txCtx, m.cancel = context.WithDeadline(m.parent, m.deadline)
		m.stop.Store(&m.cancel)
		if m.closed.Load() { // abandoned meanwhile
			m.cancel()
			return nil, ErrConsumerAbandoned
		}
		tx := m.p.db.WithContext(m.txCtx).Begin(m.p.dialect.ProcessorTxOptions())
		if tx.Error != nil {
			m.err = fmt.Errorf("asyncmonolith: begin Message.Tx: %w", tx.Error)
		} else {
			m.tx = tx
		}
	}
	if m.err != nil {
		return nil, m.err
	}
	return m.tx.Statement.ConnPool, nil
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
		// *sql.Row cannot carry an error of ours: run the query on a dead context of the
		// plugin's pool so that Scan reports the failure.
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
}

// freeSlot gives the transaction's slot back, once.
func (m *messageTx) freeSlot() {
	if m.slot.CompareAndSwap(true, false) {
		<-m.p.txSlots
	}
}

// rollback ends Message.Tx after a failed run. It reports whether the transaction's
// connection was lost (or never made): the database failed the run, not its consumer.
func (m *messageTx) rollback() (lost bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed.Store(true)
	if m.cancel != nil {
		defer m.cancel()
	}
	defer m.freeSlot()
	if m.err != nil {
		return dialect.Unavailable(m.err)
	}
	if m.tx != nil {
		if err := m.tx.Rollback().Error; err != nil && dialect.Unavailable(err) {
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
	m.closed.Store(true)
	if m.cancel != nil {
		defer m.cancel()
	}
	defer m.freeSlot()
	if m.err != nil {
		return m.err
	}
	conn := m.tx.Statement.ConnPool
	q, args := m.p.dialect.DeleteLocated("consumer_messages", []string{locator}, lease)
	res, err := conn.ExecContext(m.txCtx, q, args...)
	if err != nil {
		m.tx.Rollback()
		return fmt.Errorf("asyncmonolith: complete message: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		m.tx.Rollback()
		return ErrLeaseLost
	}
	if err := m.tx.Commit().Error; err != nil {
		return fmt.Errorf("asyncmonolith: commit Message.Tx: %w", err)
	}
	return nil
}
