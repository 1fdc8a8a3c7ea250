package asyncmonolith

import (
	"context"
	"testing"
	"time"

	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
)

// A connection kept for Message.Tx goes back to the pool once idle, even when nothing
// runs again to trim it (ProcessBatch called once, no processors).
func TestKeptTxConnectionsGoBackWhenIdle(t *testing.T) {
	t.Parallel()
	db := testdb.Open(t, "sqlite")
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	conns := newTxConns(db, 2)
	conns.idleFor = 50 * time.Millisecond
	for range 2 { // the second begin takes the kept connection again
		tx, c, err := conns.begin(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		conns.put(c, true)
		if n := sqlDB.Stats().InUse; n != 1 {
			t.Fatalf("%d connections in use after put, want 1 (kept)", n)
		}
	}
	// The idle sweep is a system-clock timer (it bounds how long a database connection is
	// kept): wait for its effect.
	testdb.Eventually(t, 10*time.Second, func() bool { return sqlDB.Stats().InUse == 0 },
		"the kept connection was not given back: %d in use", sqlDB.Stats().InUse)
	conns.mu.Lock()
	kept, sweep := len(conns.idle), conns.sweep
	conns.mu.Unlock()
	if kept != 0 || sweep != nil {
		t.Fatalf("after the sweep: %d kept, timer %v", kept, sweep)
	}
}
