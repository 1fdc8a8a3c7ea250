package migrations_test

import (
	"context"
	"testing"

	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"github.com/asyncmonolith/asyncmonolith/migrations"
)

// Under a read-replica plugin whose replica is migrated already, Up still reads the
// source's version and migrates the source.
func TestUpMigratesTheSourceUnderAResolver(t *testing.T) {
	t.Parallel()
	for _, dialect := range []string{"postgres", "mysql", "sqlite"} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			replica := testdb.Open(t, dialect)
			if err := migrations.Up(ctx, replica); err != nil {
				t.Fatal(err)
			}
			db := testdb.Open(t, dialect)
			if err := db.Use(testdb.ReadsTo(replica.ConnPool)); err != nil {
				t.Fatal(err)
			}
			if err := migrations.Up(ctx, db); err != nil {
				t.Fatal(err)
			}
			all, err := migrations.List(dialect)
			if err != nil {
				t.Fatal(err)
			}
			if v, dirty, err := migrations.Version(ctx, db); err != nil || dirty || v != all[len(all)-1].Version {
				t.Fatalf("Version = %d, %t, %v; want %d", v, dirty, err, all[len(all)-1].Version)
			}
			for _, table := range []string{"consumer_messages", "poisoned_messages", "scheduled_messages"} {
				// A write, which the plugin leaves on the source: the table must be there.
				if err := db.Exec("DELETE FROM " + table).Error; err != nil {
					t.Fatalf("%s on the source: %v", table, err)
				}
			}
		})
	}
}
