package dialect

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Serialising Migrate. Every instance of an application calls Migrate as it starts, so
// several can run it at once against one database; their existence checks and DDL then
// race (a CREATE INDEX of a table another instance has just created fails). The lock is
// per schema (PostgreSQL) or per database (MySQL), so unrelated schemas on one server do
// not wait for each other.

// migrateLockKey is the first half of the PostgreSQL advisory lock key ("AMig").
const migrateLockKey = 0x414d6967

// MigrateLockTimeout bounds the wait for another instance's Migrate (MySQL's GET_LOCK
// needs a bound; PostgreSQL waits for ctx).
const MigrateLockTimeout = 2 * time.Minute

// ErrMigrateLockTimeout is returned when another Migrate held the lock for longer than
// MigrateLockTimeout.
var ErrMigrateLockTimeout = errors.New("asyncmonolith: timed out waiting for another Migrate of this database to end")

func (postgres) LockMigrate(ctx context.Context, tx *gorm.DB) (func(), error) {
	// Released with the transaction.
	if err := tx.WithContext(ctx).Exec("SELECT pg_advisory_xact_lock(?, hashtext(current_schema()))", migrateLockKey).Error; err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	return func() {}, nil
}

// mysqlMigrateLock names the lock: GET_LOCK names are at most 64 characters.
const mysqlMigrateLock = "LEFT(CONCAT('asyncmonolith.migrate.', DATABASE()), 64)"

func (mysqlDialect) LockMigrate(ctx context.Context, tx *gorm.DB) (func(), error) {
	// A session lock, on the transaction's connection (MySQL commits DDL as it runs, so
	// the transaction alone would not hold anything); released before the connection
	// goes back to the pool.
	var got *int
	if err := tx.WithContext(ctx).Raw("SELECT GET_LOCK("+mysqlMigrateLock+", ?)", int(MigrateLockTimeout/time.Second)).Scan(&got).Error; err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if got == nil || *got != 1 {
		return nil, ErrMigrateLockTimeout
	}
	return func() {
		// Not ctx: a cancelled context would leave the lock with a pooled connection.
		tx.WithContext(context.Background()).Exec("DO RELEASE_LOCK(" + mysqlMigrateLock + ")")
	}, nil
}

// LockMigrate is a no-op on SQLite: Migrate's transaction takes the database's write
// lock at its first write.
func (sqlite) LockMigrate(context.Context, *gorm.DB) (func(), error) { return func() {}, nil }

// MigrateTx runs fn in one transaction of db that holds d's migrate lock: Migrate and the
// migrations runner of instances starting at once run one after another.
//
// The transaction outlives ctx's end once it is begun; fn's statements run with ctx (the
// tx it is given carries it). database/sql rolls back a transaction whose context ends and
// puts its connection back in the pool, which on MySQL would keep the session's lock there,
// held for good. So an ended ctx fails fn's next statement, the unlock runs on the
// connection that holds the lock, and the rollback follows. Until the transaction is begun
// (waiting for a pooled connection, or dialling one) ctx bounds it. It is READ COMMITTED
// where the default is REPEATABLE READ (MySQL/MariaDB): each check sees the tables as they
// are, not as they were when the transaction began.
//
// A transaction that lost a race for the database is run again (SQLite without
// _txlock=immediate: a transaction that has read cannot take the write lock another took
// meanwhile, and fails at once with "database is locked").
func MigrateTx(ctx context.Context, db *gorm.DB, d Dialect, fn func(tx *gorm.DB) error) error {
	wait := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := migrateTxOnce(ctx, db, d, fn)
		if err == nil || !d.Retryable(err) || attempt == migrateAttempts || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (after %w)", ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// migrateAttempts bounds MigrateTx's runs after a lost race for the database.
const migrateAttempts = 10

func migrateTxOnce(ctx context.Context, db *gorm.DB, d Dialect, fn func(tx *gorm.DB) error) error {
	txCtx, cancelTx := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelTx(nil)
	detach := context.AfterFunc(ctx, func() { cancelTx(context.Cause(ctx)) })
	err := db.WithContext(txCtx).Transaction(func(tx *gorm.DB) error {
		if !detach() { // ctx ended as the transaction began: it is rolling back
			return ctx.Err()
		}
		tx = tx.WithContext(ctx)
		unlock, err := d.LockMigrate(ctx, tx)
		if err != nil {
			return err
		}
		defer unlock()
		return fn(tx)
	}, d.ProcessorTxOptions())
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) && !errors.Is(err, ctx.Err()) {
		return ctx.Err() // txCtx's cancellation stood for ctx's end: report that (a deadline, say)
	}
	return err
}
