package asyncmonolith_test

import (
	"fmt"
	"time"

	"context"
	"database/sql"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
)

func TestProduceFlushesOnUpdateDeleteSaveAndPreparedStatements(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{}, testdb.Options{Config: &gorm.Config{PrepareStmt: true}})
		registerBoth(t, e)
		if err := e.db.Create(&Order{ID: "1", Status: "new"}).Error; err != nil {
			t.Fatal(err)
		}
		steps := []struct {
			name  string
			write func(s *gorm.DB) error
		}{
			{"Update", func(s *gorm.DB) error { return s.Model(&Order{ID: "1"}).Update("status", "paid").Error }},
			{"Save", func(s *gorm.DB) error { return s.Save(&Order{ID: "1", Status: "shipped"}).Error }},
			{"Delete", func(s *gorm.DB) error { return s.Delete(&Order{ID: "1"}).Error }},
		}
		for i, step := range steps {
			s := am.Produce(e.db, OrderCancelled{OrderID: step.name})
			if err := step.write(s); err != nil {
				t.Fatalf("%s: %v", step.name, err)
			}
			if got, want := e.pending(t), int64(2*(i+1)); got != want {
				t.Fatalf("after %s: %d messages, want %d", step.name, got, want)
			}
			if am.Pending(s) != 0 {
				t.Fatalf("after %s: %d still buffered", step.name, am.Pending(s))
			}
		}
		// Produce inside a prepared-statement transaction.
		if err := e.db.Transaction(func(tx *gorm.DB) error {
			return am.Produce(tx, OrderCancelled{OrderID: "tx"}).Error
		}); err != nil {
			t.Fatal(err)
		}
		if got := e.pending(t); got != 8 {
			t.Fatalf("%d messages, want 8", got)
		}
	})
}

// TestProduceManyShapesAndAnotherPool: inserts of many batch sizes (more than the prepared
// statements kept on SQLite) all land, and a transaction from another connection pool to
// the same database (as a resolver plugin makes) produces too: the statement prepared on
// the plugin's pool is not usable there, and the insert runs unprepared.
func TestProduceManyShapesAndAnotherPool(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		registerBoth(t, e)
		want := int64(0)
		for n := 1; n <= 40; n++ {
			batch := make([]OrderCancelled, n)
			if err := e.db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, batch).Error }); err != nil {
				t.Fatalf("batch of %d: %v", n, err)
			}
			want += int64(2 * n) // two consumers
		}
		if got := e.pending(t); got != want {
			t.Fatalf("%d pending after batches of 1…40, want %d", got, want)
		}
		if !caps(dialect).PreparesInserts() {
			return
		}
		otherPool, err := sql.Open("sqlite3", e.db.Dialector.(*sqlite.Dialector).DSN)
		if err != nil {
			t.Fatal(err)
		}
		defer otherPool.Close()
		other := e.db.Session(&gorm.Session{NewDB: true})
		other.Statement.ConnPool = otherPool
		for _, n := range []int{1, 3} { // sizes the plugin's pool has prepared
			batch := make([]OrderCancelled, n)
			if err := other.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, batch).Error }); err != nil {
				t.Fatalf("batch of %d in a transaction of another pool: %v", n, err)
			}
			s := am.ProduceBatch(other.Session(&gorm.Session{}), batch)
			if err := am.Flush(context.Background(), s); err != nil {
				t.Fatalf("batch of %d flushed on another pool, no transaction: %v", n, err)
			}
			want += int64(2 * 2 * n)
		}
		if got := e.pending(t); got != want {
			t.Fatalf("%d pending after producing on another pool, want %d", got, want)
		}
	})
}

// TestProduceOnASingleConnectionPool: with the pool's only connection held by the
// producing transaction (a common SQLite set-up), inserts still go through — the prepared
// statement is made in the background and used once ready — and nothing waits for a
// connection that cannot come.
func TestProduceOnASingleConnectionPool(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{}, testdb.Options{MaxOpenConns: 1})
		registerBoth(t, e)
		done := make(chan error, 1)
		go func() {
			for round := range 20 {
				batch := make([]OrderCancelled, 5)
				err := e.db.Transaction(func(tx *gorm.DB) error {
					if err := am.ProduceBatch(tx, batch).Error; err != nil {
						return err
					}
					return am.Produce(tx, OrderCancelled{OrderID: fmt.Sprint(round)}).Create(&Order{ID: fmt.Sprint(round)}).Error
				})
				if err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("producing on a one-connection pool is stuck")
		}
		if got := e.pending(t); got != 20*6*2 {
			t.Fatalf("%d pending, want %d", got, 20*6*2)
		}
	})
}
