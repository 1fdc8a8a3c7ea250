package reliability_test

import (
	"context"
	"os"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
)

// TestConnectionsCut terminates the processors' database connections mid-batch, again and
// again (pg_terminate_backend on PostgreSQL, KILL on MariaDB). Processors must log, back
// off, reconnect and finish with nothing lost and nothing stuck.
func TestConnectionsCut(t *testing.T) {
	t.Parallel()
	for _, dialect := range []string{"postgres", "mysql"} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			dsn, admin := fresh(t, dialect)
			var procDSN, dbName string
			switch dialect {
			case "postgres":
				procDSN = dsn + " application_name=amrel_conncut"
				admin.Raw("SELECT current_schema()").Scan(&dbName)
				procDSN += "_" + dbName
			case "mysql":
				procDSN = dsn
				admin.Raw("SELECT DATABASE()").Scan(&dbName)
			}
			db, err := open(dialect, procDSN)
			if err != nil {
				t.Fatal(err)
			}
			p := migratedWorker(t, db, am.Config{ConsumerProcessors: 2, ProcessorMinDelay: time.Millisecond, ProcessorMaxDelay: 50 * time.Millisecond,
				Logger: testLogger()})
			n := scale(10_000)
			produce(t, db, p, n)
			if err := p.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer p.Stop(context.Background())
			var cuts atomic.Int64
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					select {
					case <-stop:
						return
					case <-time.After(400 * time.Millisecond):
					}
					var killed int64
					switch dialect {
					case "postgres":
						admin.Raw("SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = ?", "amrel_conncut_"+dbName).Scan(&killed)
					case "mysql":
						var ids []int64
						admin.Raw("SELECT id FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()", dbName).Scan(&ids)
						for _, id := range ids {
							if admin.Exec("KILL ?", id).Error == nil {
								killed++
							}
						}
					}
					cuts.Add(killed)
				}
			}()
			var last int64
			testdb.Eventually(t, 3*time.Minute, func() bool {
				var c int64
				if err := admin.Model(&Consumption{}).Count(&c).Error; err != nil {
					t.Logf("count: %v", err)
				}
				if c != last && os.Getenv("AM_REL_DEBUG") != "" {
					t.Logf("consumed %d, cuts %d", c, cuts.Load())
				}
				last = c
				return c >= int64(n)
			}, "all messages consumed despite cut connections (consumed %d of %d)", &last, n)
			close(stop)
			<-done
			waitDrained(t, admin, time.Minute)
			consumed, poisoned := account(t, admin, n)
			t.Logf("%s: produced %d, consumed %d, poisoned %d, lost 0, connections cut %d", dialect, n, consumed, poisoned, cuts.Load())
			if cuts.Load() < 10 {
				t.Fatalf("only %d connections were cut; the test did not exercise the fault", cuts.Load())
			}
		})
	}
}
