package asyncmonolith_test

import (
	"context"
	"errors"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"github.com/asyncmonolith/asyncmonolith/migrations"
	"gorm.io/gorm"
	"gorm.io/gorm/schema"
)

// namings are NamingStrategies applications use instead of GORM's default.
var namings = map[string]schema.NamingStrategy{
	"NoLowerCase":   {NoLowerCase: true},
	"TablePrefix":   {TablePrefix: "app_"},
	"SingularTable": {SingularTable: true},
	"all":           {NoLowerCase: true, TablePrefix: "app_", SingularTable: true},
}

// TestNamingStrategyDoesNotRenameThePluginsTables: under the application's NamingStrategy
// the plugin's tables and columns keep their names, and the whole flow works: produce in a
// transaction, consume, retry, poison, the admin API, schedules and the SQL migrations.
func TestNamingStrategyDoesNotRenameThePluginsTables(t *testing.T) {
	t.Parallel()
	for name, ns := range namings {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			eachDB(t, func(t *testing.T, dialect string) {
				ctx := context.Background()
				e := setup(t, dialect, am.Config{MaxAttempts: 2, AttemptDelay: time.Minute, DisableBreaker: true},
					testdb.Options{Config: &gorm.Config{NamingStrategy: ns}})
				if err := e.db.AutoMigrate(&Order{}); err != nil {
					t.Fatal(err)
				}
				flaky, broken := &recorder[OrderCancelled]{}, &recorder[OrderCancelled]{}
				flaky.fn = func(_ context.Context, m *am.Message[OrderCancelled]) error {
					if m.Attempt == 1 {
						return errors.New("first attempt fails")
					}
					return nil
				}
				broken.fn = func(context.Context, *am.Message[OrderCancelled]) error { return errors.New("always fails") }
				if err := am.Register[OrderCancelled](e.p, am.ConsumerFunc[OrderCancelled](flaky.Consume), am.WithName("Flaky")); err != nil {
					t.Fatal(err)
				}
				if err := am.Register[OrderCancelled](e.p, am.ConsumerFunc[OrderCancelled](broken.Consume), am.WithName("Broken")); err != nil {
					t.Fatal(err)
				}
				for _, table := range []string{"consumer_messages", "poisoned_messages", "scheduled_messages"} {
					for _, col := range []string{"id", "payload_type", "available_after"} {
						if !e.db.Migrator().HasColumn(table, col) {
							t.Fatalf("Migrate did not create %s.%s", table, col)
						}
					}
				}

				err := e.db.Transaction(func(tx *gorm.DB) error {
					if err := tx.Create(&Order{ID: "1", Status: "cancelled"}).Error; err != nil {
						return err
					}
					return am.Produce(tx, OrderCancelled{OrderID: "1"}, am.InsertID("order:1")).Error
				})
				if err != nil {
					t.Fatalf("produce in a transaction: %v", err)
				}
				if got := e.pending(t); got != 2 {
					t.Fatalf("%d pending, want 2", got)
				}
				stats, err := e.p.Stats(ctx)
				if err != nil || len(stats) != 2 || stats[0].ConsumerType != "Broken" || stats[0].Pending != 1 || stats[0].Due != 1 {
					t.Fatalf("Stats = %+v, %v", stats, err)
				}
				mustBatch(t, e) // both fail their first attempt
				msgs, err := e.p.ListMessages(ctx, am.MessageFilter{ConsumerType: "Flaky"})
				if err != nil || len(msgs) != 1 || msgs[0].Attempts != 1 || msgs[0].LastError == nil || msgs[0].InsertID != "order:1" {
					t.Fatalf("ListMessages = %+v, %v", msgs, err)
				}
				e.clock.Advance(time.Minute)
				mustBatch(t, e) // Flaky succeeds, Broken is poisoned
				if flaky.count() != 2 || broken.count() != 2 || e.pending(t) != 0 {
					t.Fatalf("runs %d and %d, %d pending", flaky.count(), broken.count(), e.pending(t))
				}
				poisoned, err := e.p.ListPoisoned(ctx, am.MessageFilter{})
				if err != nil || len(poisoned) != 1 || poisoned[0].ConsumerType != "Broken" || poisoned[0].LastError == "" {
					t.Fatalf("ListPoisoned = %+v, %v", poisoned, err)
				}
				stats, err = e.p.Stats(ctx)
				if err != nil || len(stats) != 1 || stats[0].Poisoned != 1 {
					t.Fatalf("Stats after poisoning = %+v, %v", stats, err)
				}
				if n, err := e.p.RequeuePoisoned(ctx, []string{poisoned[0].ID}); err != nil || n != 1 || e.pending(t) != 1 {
					t.Fatalf("RequeuePoisoned = %d, %v; %d pending", n, err, e.pending(t))
				}

				id, err := am.Schedule(t.Context(), e.db, OrderCancelled{OrderID: "s"}, "@every 1h", am.Tag("hourly"))
				if err != nil {
					t.Fatal(err)
				}
				e.clock.Advance(time.Hour)
				if n, err := e.p.FireSchedules(ctx); err != nil || n != 1 {
					t.Fatalf("FireSchedules = %d, %v", n, err)
				}
				if s, err := e.p.GetSchedule(ctx, id); err != nil || s.Tag == nil || *s.Tag != "hourly" {
					t.Fatalf("GetSchedule = %+v, %v", s, err)
				}
				if list, err := e.p.ListSchedules(ctx, "hourly"); err != nil || len(list) != 1 {
					t.Fatalf("ListSchedules = %+v, %v", list, err)
				}

				// The SQL files, applied through a session with this naming, twice.
				other := testdb.Open(t, dialect, testdb.Options{Config: &gorm.Config{NamingStrategy: ns}})
				for range 2 {
					if err := migrations.Up(ctx, other); err != nil {
						t.Fatalf("migrations.Up: %v", err)
					}
				}
			})
		})
	}
}
