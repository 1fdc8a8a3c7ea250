package asyncmonolith_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"gorm.io/gorm"
)

// On SQLite without _txlock=immediate, a Migrate that has read cannot take the write
// lock another took meanwhile ("database is locked" at once, busy_timeout or not): it runs
// again, and every instance's Migrate succeeds.
func TestConcurrentMigrateSQLiteDeferredTx(t *testing.T) {
	t.Parallel()
	for _, q := range []string{"?_journal_mode=WAL&_busy_timeout=5000", "?_busy_timeout=5000", ""} {
		t.Run(q, func(t *testing.T) {
			t.Parallel()
			dsn := "file:" + filepath.Join(t.TempDir(), "app.db") + q
			var dbs []*gorm.DB
			for range 4 {
				dbs = append(dbs, openAgain(t, "sqlite", dsn))
			}
			migrateAtOnce(t, dbs)
		})
	}
}

// Instances of an application started at once each call Migrate on a database that has
// no tables yet: every call succeeds (they run one at a time), and the schema is whole.
func TestConcurrentMigrate(t *testing.T) {
	t.Parallel()
	for _, dialect := range []string{"postgres", "mysql"} { // SQLite: one writer at a time anyway
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			dsn, first := testdb.OpenDSN(t, dialect)
			const instances = 5
			dbs := []*gorm.DB{first}
			for range instances - 1 {
				db := openAgain(t, dialect, dsn)
				dbs = append(dbs, db)
			}
			migrateAtOnce(t, dbs)
			// The schema works: a message goes in.
			p, err := am.Of(first)
			if err != nil {
				t.Fatal(err)
			}
			if err := am.Register[Job](p, Flaky{&recorder[Job]{}}); err != nil {
				t.Fatal(err)
			}
			if err := am.ProduceNow(context.Background(), first, Job{N: 1}); err != nil {
				t.Fatal(err)
			}
			m := first.Migrator()
			for _, idx := range []string{"idx_consumer_messages_rail_fetch", "ux_consumer_messages_pending_insert_id"} {
				if !m.HasIndex(&am.ConsumerMessage{}, idx) {
					t.Errorf("index %s is missing", idx)
				}
			}
		})
	}
}

// migrateAtOnce registers a plugin on each of dbs and runs their Migrates at once; each
// must succeed.
func migrateAtOnce(t *testing.T, dbs []*gorm.DB) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(dbs))
	start := make(chan struct{})
	for i, db := range dbs {
		p := am.New(am.Config{})
		if err := db.Use(p); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			<-start
			errs[i] = p.Migrate(context.Background(), db)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("instance %d: Migrate: %v", i, err)
		}
	}
}
