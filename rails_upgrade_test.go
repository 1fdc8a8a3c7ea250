package asyncmonolith_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"github.com/asyncmonolith/asyncmonolith/migrations"
)

// A database at the version before rails, holding pending, running and poisoned messages,
// is upgraded — by the SQL files (migrations.Up) and by Plugin.Migrate — without losing
// one: they join the default rail, are consumed, and a poisoned one is requeued and
// consumed too.
func TestRailsMigrationUpgradesRowsInPlace(t *testing.T) {
	t.Parallel()
	for _, dialect := range testdb.Dialects {
		for _, path := range []string{"sql", "automigrate"} {
			t.Run(dialect+"/"+path, func(t *testing.T) {
				t.Parallel()
				ctx := context.Background()
				db := testdb.Open(t, dialect)
				all, err := migrations.List(dialect)
				if err != nil {
					t.Fatal(err)
				}
				railsAt := slices.IndexFunc(all, func(m migrations.Migration) bool { return strings.HasSuffix(m.Name, "rails") })
				if railsAt < 1 {
					t.Fatalf("no rails migration in %v", all)
				}
				for _, m := range all[:railsAt] {
					for _, stmt := range migrations.Statements(m.Up) {
						if err := db.Exec(stmt).Error; err != nil {
							t.Fatalf("%d %s: %v", m.Version, m.Name, err)
						}
					}
				}
				if err := db.Exec("CREATE TABLE " + migrations.VersionTable + " (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)").Error; err != nil {
					t.Fatal(err)
				}
				if err := db.Exec("INSERT INTO "+migrations.VersionTable+" (version, dirty) VALUES (?, ?)", all[railsAt-1].Version, false).Error; err != nil {
					t.Fatal(err)
				}
				// As the previous version wrote them: no rail column.
				insert := "INSERT INTO consumer_messages (id, created_at, available_after, attempts, consumer_type, payload_type, payload, insert_id, pending) VALUES (?, 1, ?, ?, 'Fast', 'fastJob', ?, ?, ?)"
				for i, r := range []struct {
					id      string
					due     int64
					attempt int
					pending any
				}{{"p1", 1, 0, true}, {"p2", 2, 2, true}, {"r1", 3, 1, nil}} { // r1: claimed by a process that died, its lease over
					if err := db.Exec(insert, r.id, r.due, r.attempt, `{"N":`+string(rune('1'+i))+`}`, r.id, r.pending).Error; err != nil {
						t.Fatal(err)
					}
				}
				if err := db.Exec("INSERT INTO poisoned_messages (id, created_at, available_after, attempts, consumer_type, payload_type, payload, insert_id, last_error, poisoned_at) VALUES ('x1', 1, 1, 5, 'Fast', 'fastJob', '{\"N\":9}', 'x1', 'boom', 1)").Error; err != nil {
					t.Fatal(err)
				}
				p := am.New(am.Config{Rails: map[string]am.RailConfig{"slow": {}}})
				if err := db.Use(p); err != nil {
					t.Fatal(err)
				}
				switch path {
				case "sql":
					if err := migrations.Up(ctx, db); err != nil {
						t.Fatal(err)
					}
				case "automigrate":
					if err := p.Migrate(ctx, db); err != nil {
						t.Fatal(err)
					}
				}
				if db.Migrator().HasIndex(&am.ConsumerMessage{}, "idx_consumer_messages_fetch") ||
					!db.Migrator().HasIndex(&am.ConsumerMessage{}, "idx_consumer_messages_rail_fetch") {
					t.Fatal("after the upgrade the fetch index is not idx_consumer_messages_rail_fetch alone")
				}
				var fast recorder[fastJob]
				if err := am.Register(p, &fast, am.WithName("Fast")); err != nil {
					t.Fatal(err)
				}
				var slow recorder[slowJob]
				if err := am.Register(p, &slow, am.WithName("Slow"), am.WithRail("slow")); err != nil {
					t.Fatal(err)
				}
				stats, err := p.StatsByRail(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if len(stats) != 2 || stats[0].Pending != 3 || stats[0].Running != 1 || stats[0].Poisoned != 1 || stats[1].Pending != 0 {
					t.Fatalf("StatsByRail after the upgrade: %+v", stats)
				}
				for range 3 {
					if _, err := p.ProcessBatch(ctx); err != nil {
						t.Fatal(err)
					}
				}
				if fast.count() != 3 {
					t.Fatalf("consumed %d of the 3 stored messages after the upgrade", fast.count())
				}
				if n, err := p.RequeuePoisoned(ctx, []string{"x1"}); err != nil || n != 1 {
					t.Fatalf("requeue after the upgrade: %d, %v", n, err)
				}
				if _, err := p.ProcessBatch(ctx); err != nil {
					t.Fatal(err)
				}
				var left int64
				if err := db.Model(&am.ConsumerMessage{}).Count(&left).Error; err != nil || left != 0 || fast.count() != 4 {
					t.Fatalf("after requeue: %d consumed, %d left, %v", fast.count(), left, err)
				}
				// The new schema takes rails from the producer.
				if err := am.ProduceNow(ctx, db, slowJob{1}); err != nil {
					t.Fatal(err)
				}
				if _, err := p.ProcessBatch(ctx); err != nil || slow.count() != 1 {
					t.Fatalf("a message on rail slow after the upgrade: %d consumed, %v", slow.count(), err)
				}
				// And down again: the rails migration reverts.
				if path == "sql" {
					if err := migrations.Down(ctx, db); err != nil {
						t.Fatal(err)
					}
				}
			})
		}
	}
}
