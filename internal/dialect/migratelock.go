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
