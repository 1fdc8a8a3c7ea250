package asyncmonolith

import (
	"context"
	"database/sql"
	"sync"
	"sync/atomic"

	"gorm.io/gorm"
)

// savepointName isolates one consumer's writes inside its batch's transaction.
const savepointName = "asyncmonolith_msg"

// lazyTx is the connection behind Message.Tx: the batch transaction, behind a savepoint
// taken only at the consumer's first statement. A consumer that writes nothing costs no
// round trip; one that fails has its writes rolled back without undoing the rest of the
// batch (on PostgreSQL, a failed statement would otherwise abort the whole transaction).
type lazyTx struct {
	mu        sync.Mutex
	conn      gorm.ConnPool
	taken     bool
	broken    bool        // the savepoint could not be taken: the transaction is unusable
	abandoned atomic.Bool // set without the lock, so a hung statement cannot delay it
}

var (
	_ gorm.ConnPool    = (*lazyTx)(nil)
	_ gorm.TxCommitter = (*lazyTx)(nil)
)

// enter takes the savepoint if needed; l.mu is held.
func (l *lazyTx) enter(ctx context.Context) error {
	if l.abandoned.Load() {
		return ErrConsumerAbandoned
	}
	if !l.taken {
		if _, err := l.conn.ExecContext(ctx, "SAVEPOINT "+savepointName); err != nil {
			// A lost connection (or an aborted transaction) fails here first: the batch
			// cannot go on, and the rest of its consumers must not run on it.
			l.broken = true
			return err
		}
		l.taken = true
	}
	return nil
}

func (l *lazyTx) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.enter(ctx); err != nil {
		return nil, err
	}
	return l.conn.PrepareContext(ctx, query)
}

func (l *lazyTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.enter(ctx); err != nil {
		return nil, err
	}
	return l.conn.ExecContext(ctx, query, args...)
}

func (l *lazyTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.enter(ctx); err != nil {
		return nil, err
	}
	return l.conn.QueryContext(ctx, query, args...)
}

func (l *lazyTx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.enter(ctx); err != nil {
		// *sql.Row cannot carry an error of ours: run the query on a dead context so
		// that Scan reports a failure instead of reading outside the savepoint.
		dead, cancel := context.WithCancelCause(ctx)
		cancel(err)
		return l.conn.QueryRowContext(dead, query, args...)
	}
	return l.conn.QueryRowContext(ctx, query, args...)
}

// abandon closes the connection to a consumer that outlived its timeout.
func (l *lazyTx) abandon() { l.abandoned.Store(true) }

// Commit refuses: the processor commits the batch.
func (l *lazyTx) Commit() error { return ErrTxManaged }

// Rollback refuses: return an error from Consume to roll back the consumer's writes.
func (l *lazyTx) Rollback() error { return ErrTxManaged }

// settle ends the consumer's savepoint: released on success, rolled back on failure. It
// returns the run's final error (a failed release makes the run fail) and whether the
// batch transaction is still usable.
func (l *lazyTx) settle(ctx context.Context, runErr error) (error, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.abandoned.Store(true) // no statement from this consumer after this point
	if l.broken {
		return runErr, false
	}
	if !l.taken {
		return runErr, true
	}
	if runErr == nil {
		if _, err := l.conn.ExecContext(ctx, "RELEASE SAVEPOINT "+savepointName); err == nil {
			return nil, true
		} else {
			runErr = err
		}
	}
	if _, err := l.conn.ExecContext(ctx, "ROLLBACK TO SAVEPOINT "+savepointName); err != nil {
		return runErr, false
	}
	return runErr, true
}
