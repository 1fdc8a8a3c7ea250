package asyncmonolith_test

import (
	"context"
	"errors"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
)

// Migrate and the operations read from the source under a resolver-like plugin whose
// replica holds the schema and a stale row of each table, but none of the source's rows.
func TestReadsGoToTheSourceUnderAResolver(t *testing.T) {
	t.Parallel()
	for _, dialect := range []string{"postgres", "mysql"} { // SQLite reads outside a transaction (source.go)
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			replica := testdb.Open(t, dialect)
			if err := am.New(am.Config{}).Migrate(ctx, replica); err != nil {
				t.Fatal(err)
			}
			stale := []any{
				&am.ConsumerMessage{ID: "stale", CreatedAt: 1, AvailableAfter: 1, ConsumerType: "Flaky", PayloadType: "Job", Payload: "{}", InsertID: "stale"},
				&am.PoisonedMessage{ID: "stale", CreatedAt: 1, AvailableAfter: 1, ConsumerType: "Flaky", PayloadType: "Job", Payload: "{}", InsertID: "stale", LastError: "stale", PoisonedAt: 1},
				&am.ScheduledMessage{ID: "stale", AvailableAfter: 1, ChronExpression: "@every 1m", ChronTimezone: "UTC", PayloadType: "Job", Payload: "{}"},
			}
			for _, row := range stale {
				if err := replica.Create(row).Error; err != nil {
					t.Fatal(err)
				}
			}
			db := testdb.Open(t, dialect)
			if err := db.Use(testdb.ReadsTo(replica.ConnPool)); err != nil {
				t.Fatal(err)
			}
			e := setupOn(t, db, am.Config{MaxAttempts: 1})
			fail := &recorder[Job]{fn: func(context.Context, *am.Message[Job]) error { return errors.New("down") }}
			if err := am.Register[Job](e.p, Flaky{fail}); err != nil {
				t.Fatal(err)
			}

			if n, err := e.p.ListMessages(ctx, am.MessageFilter{}); err != nil || len(n) != 0 {
				t.Fatalf("ListMessages on an empty source = %d rows, %v", len(n), err)
			}
			if err := am.ProduceNow(ctx, e.db, Job{N: 1}); err != nil {
				t.Fatal(err)
			}
			mustBatch(t, e)
			poisoned, err := e.p.ListPoisoned(ctx, am.MessageFilter{})
			if err != nil || len(poisoned) != 1 || poisoned[0].ID == "stale" {
				t.Fatalf("ListPoisoned = %+v, %v; want the source's one", poisoned, err)
			}
			if _, err := e.p.GetPoisoned(ctx, "stale"); !errors.Is(err, am.ErrMessageNotFound) {
				t.Fatalf("GetPoisoned(the replica's row) = %v, want ErrMessageNotFound", err)
			}
			if stats, err := e.p.Stats(ctx); err != nil || len(stats) != 1 || stats[0].Pending != 0 || stats[0].Poisoned != 1 {
				t.Fatalf("Stats = %+v, %v; want Flaky with 1 poisoned, 0 pending", stats, err)
			}
			id, err := am.Schedule(t.Context(), e.db, Job{N: 2}, "@every 1m")
			if err != nil {
				t.Fatal(err)
			}
			if s, err := e.p.ListSchedules(ctx, ""); err != nil || len(s) != 1 || s[0].ID != id {
				t.Fatalf("ListSchedules = %+v, %v; want only %s", s, err, id)
			}
			if _, err := e.p.GetSchedule(t.Context(), id); err != nil {
				t.Fatalf("GetSchedule of the source's schedule: %v", err)
			}
			// The dashboard's paged reads and counts too.
			if pg, err := e.p.PageMessages(ctx, am.MessageFilter{}, ""); err != nil || len(pg.Rows) != 0 {
				t.Fatalf("PageMessages on a source with none = %+v, %v", pg.Rows, err)
			}
			if n, err := e.p.CountMessages(ctx, am.MessageFilter{}); err != nil || n != 0 {
				t.Fatalf("CountMessages = %d, %v; want the source's 0", n, err)
			}
			if pg, err := e.p.PagePoisoned(ctx, am.MessageFilter{}, ""); err != nil || len(pg.Rows) != 1 || pg.Rows[0].ID == "stale" {
				t.Fatalf("PagePoisoned = %+v, %v; want the source's one", pg.Rows, err)
			}
			if n, err := e.p.CountPoisoned(ctx, am.MessageFilter{ConsumerType: "Flaky"}); err != nil || n != 1 {
				t.Fatalf("CountPoisoned = %d, %v; want the source's 1", n, err)
			}
			if pg, err := e.p.PageSchedules(ctx, am.ScheduleFilter{}, ""); err != nil || len(pg.Rows) != 1 || pg.Rows[0].ID != id {
				t.Fatalf("PageSchedules = %+v, %v; want only %s", pg.Rows, err, id)
			}
			// The router is live: a plain read outside a transaction is the replica's.
			var n int64
			if err := e.db.Model(&am.ScheduledMessage{}).Where("id = ?", "stale").Count(&n).Error; err != nil || n != 1 {
				t.Fatalf("a plain read found %d stale schedules (%v): the router is not in use", n, err)
			}
		})
	}
}
