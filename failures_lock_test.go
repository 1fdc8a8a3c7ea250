package asyncmonolith_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"gorm.io/gorm"
)

// lockCase: the consumer's UPDATE through Message.Tx waits on a row lock the application
// holds in another transaction until the consumer's timeout ends it. The application keeps
// the lock until the statement returns, or for hold after the timeout. On SQLite the lock is
// the database's write lock: the application takes it once the batch is claimed (a claim
// needs it too), and keeps it 1 s past the timeout, because SQLite's busy wait does not
// end with the context: the statement outlives its timeout until the lock is released.
func lockCase(dialect string) failureCase {
	started := make(chan struct{}, 2)
	locked := make(chan struct{}, 2)
	returned := make(chan error, 2)
	timedOut := make(chan struct{}, 2)
	var tried atomic.Int32 // the consumer's UPDATE was sent while the application held the lock
	backend := make(chan int64, 2)
	lockFirst, hold := caps(dialect).RowLocks(), 3*time.Second
	if !lockFirst {
		hold = time.Second
	}
	drainAll := func() {
		for _, ch := range []chan struct{}{started, locked, timedOut} {
			for len(ch) > 0 {
				<-ch
			}
		}
		for len(returned) > 0 {
			<-returned
		}
	}
	return failureCase{
		name:    "UpdateWaitsOnAppRowLock",
		timeout: 300 * time.Millisecond,
		setup: func(t *testing.T, e *env) {
			if err := e.db.AutoMigrate(&Counter{}); err != nil {
				t.Fatal(err)
			}
			if err := e.db.Create(&Counter{ID: 1}).Error; err != nil {
				t.Fatal(err)
			}
		},
		consume: func(ctx context.Context, m *am.Message[Bad]) error {
			go func() { <-ctx.Done(); timedOut <- struct{}{} }()
			started <- struct{}{}
			select {
			case <-locked:
			case <-ctx.Done():
				return fmt.Errorf("the application never took the lock: %w", ctx.Err())
			}
			if lockFirst { // a server: name the connection whose UPDATE the test sees wait
				var id int64
				if err := m.Tx.Raw(backendIDQuery(dialect)).Scan(&id).Error; err != nil {
					return err
				}
				backend <- id
			}
			tried.Add(1)
			err := m.Tx.Exec("UPDATE counters SET n = n + 1 WHERE id = 1").Error
			returned <- err
			if err == nil {
				err = ctx.Err()
			}
			if err == nil {
				return errors.New("the UPDATE did not wait for the application's lock")
			}
			return err
		},
		round: func(t *testing.T, e *env, process func()) {
			drainAll()
			var tx *gorm.DB
			lock := func() {
				tx = e.db.Begin()
				if err := tx.Exec("UPDATE counters SET n = n + 100 WHERE id = 1").Error; err != nil {
					tx.Rollback()
					t.Fatalf("the application could not take the lock: %v", err)
				}
				locked <- struct{}{}
			}
			defer func() { // on every path: a lock left held would block the database's drop
				if tx != nil {
					tx.Rollback()
				}
			}()
			if lockFirst {
				lock()
			}
			done := make(chan struct{})
			go func() { defer close(done); process() }()
			select {
			case <-started:
			case <-done:
				t.Error("the round ended before the failing consumer started")
				return
			case <-time.After(30 * time.Second): // generous: a loaded CI machine
				t.Fatal("the failing consumer did not start")
			}
			if !lockFirst {
				lock()
			}
			// The consumer's timeout runs on the test clock: it passes once the UPDATE waits
			// on the lock (seen on the server; on SQLite, where the wait is the driver's busy
			// loop, once the consumer is about to send it).
			if lockFirst {
				id := recv(t, backend, "the consumer names its connection")
				obs := testdb.Open(t, dialect)
				eventually(t, func() bool { return serverRuns(t, obs, dialect, id, "lock wait") }, "the consumer's UPDATE waits on the application's lock")
			} else {
				eventually(t, func() bool { return tried.Load() > 0 }, "the consumer sends its UPDATE")
			}
			e.clock.Advance(300 * time.Millisecond)
			select {
			case <-returned:
			case <-timedOut:
				select {
				case <-returned:
				case <-time.After(hold):
				}
			}
			tx.Rollback()
			tx = nil
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("the round did not end after the application released its lock")
			}
			if tried.Swap(0) == 0 {
				t.Error("the failing consumer's UPDATE was never sent while the application held the lock: the application got it only after the run")
			}
		},
		reason: func(t *testing.T, where, s string) {
			t.Helper()
			if !strings.Contains(s, "timed out") {
				t.Errorf("%s: stored error %q does not say the consumer timed out", where, s)
			}
		},
	}
}
