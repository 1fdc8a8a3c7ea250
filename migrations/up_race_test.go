package migrations_test

import (
	"context"
	"sync"
	"testing"

	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"github.com/asyncmonolith/asyncmonolith/migrations"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Instances of an application started at once each run Up on a database without the
// schema: every call succeeds (they take the migrate lock Migrate takes, one after
// another), and the version is the last migration's.
func TestConcurrentUp(t *testing.T) {
	t.Parallel()
	for _, dialect := range []string{"postgres", "mysql"} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			dsn, first := testdb.OpenDSN(t, dialect)
			dbs := []*gorm.DB{first}
			for range 3 {
				var d gorm.Dialector = postgres.Open(dsn)
				if dialect == "mysql" {
					d = mysql.Open(dsn)
				}
				db, err := gorm.Open(d, &gorm.Config{Logger: logger.Discard})
				if err != nil {
					t.Fatal(err)
				}
				sqlDB, _ := db.DB()
				t.Cleanup(func() { sqlDB.Close() })
				dbs = append(dbs, db)
			}
			var wg sync.WaitGroup
			start := make(chan struct{})
			errs := make([]error, len(dbs))
			for i, db := range dbs {
				wg.Go(func() {
					<-start
					errs[i] = migrations.Up(context.Background(), db)
				})
			}
			close(start)
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("instance %d: Up: %v", i, err)
				}
			}
			ms, err := migrations.List(dialect)
			if err != nil {
				t.Fatal(err)
			}
			v, dirty, err := migrations.Version(context.Background(), first)
			if err != nil || dirty || v != ms[len(ms)-1].Version {
				t.Fatalf("Version = %d, dirty %v, %v; want %d, clean", v, dirty, err, ms[len(ms)-1].Version)
			}
		})
	}
}
