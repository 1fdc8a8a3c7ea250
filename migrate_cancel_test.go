package asyncmonolith_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// A Migrate whose context ends after it took the lock (between two statements) fails, and
// leaves the lock behind on no connection: another instance's Migrate succeeds at once.
// On MySQL the lock is a session lock; the transaction's connection goes back to the pool
// when database/sql rolls the transaction back for its ended context.
func TestMigrateCancelledLeavesNoLock(t *testing.T) {
	t.Parallel()
	for _, dialect := range []string{"postgres", "mysql"} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			db, p, other, op := twoInstances(t, dialect)
			sqlDB, err := db.DB()
			if err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				ctx, cancel := context.WithCancel(context.Background())
				// Cancel right after the lock is taken and its statement is over, before
				// Migrate's next statement.
				locked := false
				after := func(d *gorm.DB) {
					if strings.Contains(strings.ToUpper(d.Statement.SQL.String()), "LOCK(") {
						locked = true
					}
				}
				before := func(*gorm.DB) {
					if locked {
						locked = false
						inUse := sqlDB.Stats().InUse
						cancel()
						// Were the transaction begun on ctx, database/sql would now roll it
						// back in its own goroutine and put its connection (on MySQL, with
						// the session lock) back in the pool before Migrate unlocks. That
						// is a non-event to wait for: watch the pool for 50 ms.
						if rolledBack(sqlDB, inUse, 50*time.Millisecond) {
							t.Errorf("round %d: the cancelled Migrate's transaction went back to the pool before Migrate ended (begun on its context?)", i)
						}
					}
				}
				cb := db.Callback()
				_ = cb.Raw().After("gorm:raw").Register("test:after", after)
				_ = cb.Row().Before("gorm:row").Register("test:before", before)
				_ = cb.Raw().Before("gorm:raw").Register("test:before", before)
				_ = cb.Query().Before("gorm:query").Register("test:before", before)
				_ = cb.Row().After("gorm:row").Register("test:after", after)
				err := p.Migrate(ctx, db)
				_ = cb.Raw().Remove("test:after")
				_ = cb.Row().Remove("test:after")
				_ = cb.Row().Remove("test:before")
				_ = cb.Raw().Remove("test:before")
				_ = cb.Query().Remove("test:before")
				cancel()
				if err == nil {
					t.Fatalf("round %d: Migrate with a context cancelled midway returned nil", i)
				}
				wait, stop := context.WithTimeout(context.Background(), 10*time.Second)
				start := time.Now()
				err = op.Migrate(wait, other)
				stop()
				if err != nil {
					t.Fatalf("round %d: the next Migrate (another pool) after a cancelled one: %v (after %v)", i, err, time.Since(start))
				}
			}
		})
	}
}

// A Migrate whose context ends while it waits for another instance's lock fails with
// that context's error and takes nothing with it: once the holder is done, the next
// Migrate runs at once.
func TestMigrateCancelledWhileWaiting(t *testing.T) {
	t.Parallel()
	for _, dialect := range []string{"postgres", "mysql"} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			// The holder is another instance's Migrate, stopped inside its lock.
			db, p, holder, hp := twoInstances(t, dialect)
			release := make(chan struct{})
			held := make(chan struct{})
			done := make(chan error, 1)
			once := false
			hold := func(d *gorm.DB) {
				if !once && d.Statement.Context.Value(holdKey{}) != nil && !strings.Contains(strings.ToUpper(d.Statement.SQL.String()), "LOCK(") {
					once = true
					close(held)
					<-release
				}
			}
			_ = holder.Callback().Raw().Before("gorm:raw").Register("test:hold", hold)
			_ = holder.Callback().Row().Before("gorm:row").Register("test:hold", hold)
			go func() { done <- hp.Migrate(context.WithValue(context.Background(), holdKey{}, true), holder) }()
			<-held
			wait, stop := context.WithTimeout(context.Background(), 300*time.Millisecond)
			err := p.Migrate(wait, db)
			stop()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Migrate while another holds the lock, its context ending: %v; want context.DeadlineExceeded", err)
			}
			close(release)
			if err := <-done; err != nil {
				t.Fatalf("the holder's Migrate: %v", err)
			}
			next, stop := context.WithTimeout(context.Background(), 10*time.Second)
			defer stop()
			start := time.Now()
			if err := p.Migrate(next, db); err != nil {
				t.Fatalf("the next Migrate: %v (after %v)", err, time.Since(start))
			}
		})
	}
}

type holdKey struct{}

// rolledBack watches db's pool for up to d and reports whether a connection in use (of
// the inUse there were) went back meanwhile.
func rolledBack(db *sql.DB, inUse int, d time.Duration) bool {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	end := time.After(d)
	for db.Stats().InUse >= inUse {
		select {
		case <-tick.C:
		case <-end:
			return false
		}
	}
	return true
}

// twoInstances is two pools on one fresh database, each with a plugin registered.
func twoInstances(t *testing.T, dialect string) (*gorm.DB, *am.Plugin, *gorm.DB, *am.Plugin) {
	t.Helper()
	dsn, db := testdb.OpenDSN(t, dialect)
	other := openAgain(t, dialect, dsn)
	p, op := am.New(am.Config{}), am.New(am.Config{})
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	if err := other.Use(op); err != nil {
		t.Fatal(err)
	}
	return db, p, other, op
}

// openAgain opens a second pool on the database of dsn.
func openAgain(t *testing.T, dialect, dsn string) *gorm.DB {
	t.Helper()
	var d gorm.Dialector
	switch dialect {
	case "postgres":
		d = postgres.Open(dsn)
	case "mysql":
		d = mysql.Open(dsn)
	default:
		d = sqlite.Open(dsn)
	}
	db, err := gorm.Open(d, &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	t.Cleanup(func() { sqlDB.Close() })
	return db
}

// A Migrate that fails midway (here: a view stands where its last table goes) releases the
// lock: once the obstacle is gone, another instance's Migrate runs at once.
func TestMigrateFailingMidwayLeavesNoLock(t *testing.T) {
	t.Parallel()
	for _, dialect := range []string{"postgres", "mysql"} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			db, p, other, op := twoInstances(t, dialect)
			if err := db.Exec("CREATE VIEW scheduled_messages AS SELECT 1 AS x").Error; err != nil {
				t.Fatal(err)
			}
			if err := p.Migrate(context.Background(), db); err == nil {
				t.Fatal("Migrate with a view where a table goes returned nil")
			}
			if err := db.Exec("DROP VIEW scheduled_messages").Error; err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := op.Migrate(ctx, other); err != nil {
				t.Fatalf("the next Migrate (another pool) after a failed one: %v", err)
			}
		})
	}
}

// Migrate's context bounds its wait for a connection: on a pool whose only connection is
// busy, it fails with the context's error when the context ends.
func TestMigrateContextBoundsConnectionWait(t *testing.T) {
	t.Parallel()
	db := testdb.Open(t, "postgres", testdb.Options{MaxOpenConns: 1})
	p := am.New(am.Config{})
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	busy := db.Begin() // the pool's only connection
	if busy.Error != nil {
		t.Fatal(busy.Error)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		done <- p.Migrate(ctx, db)
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Migrate on a busy pool: %v, want context.DeadlineExceeded", err)
		}
		busy.Rollback()
	case <-time.After(10 * time.Second):
		busy.Rollback() // lets the Migrate go on
		t.Fatalf("Migrate with a 300ms context still waiting for a connection after 10s; then: %v", <-done)
	}
}
