package main_test

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
)

// TestCLIStatsRails: stats shows each rail (those named by --rails even when empty, one
// found only on stored rows as not configured) and each consumer with its rail, in the
// text tables and in JSON, with the counts of the rows in the database.
func TestCLIStatsRails(t *testing.T) {
	t.Parallel()
	for _, dialect := range testdb.Dialects {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			dsn, db := testdb.OpenDSN(t, dialect)
			base := []string{"--db", dialect, "--dsn", dsn}
			run := func(args ...string) (string, string, int) {
				return cli(t, append(append([]string{}, base...), args...)...)
			}
			if out, errOut, code := run("migrate", "up"); code != 0 {
				t.Fatalf("migrate up: %d %s %s", code, out, errOut)
			}
			p := am.New(am.Config{MaxAttempts: 1, Rails: map[string]am.RailConfig{"slow": {}}})
			if err := db.Use(p); err != nil {
				t.Fatal(err)
			}
			fail := am.ConsumerFunc[Job](func(context.Context, *am.Message[Job]) error { return context.DeadlineExceeded })
			if err := am.Register[Job](p, fail, am.WithName("Fast")); err != nil {
				t.Fatal(err)
			}
			if err := am.Register[Job](p, fail, am.WithName("Slow"), am.WithRail("slow")); err != nil {
				t.Fatal(err)
			}
			// Each Job goes to both consumers: 3 on the default rail and 3 on "slow".
			for i := range 3 {
				if err := am.ProduceNow(ctx, db, Job{N: i}); err != nil {
					t.Fatal(err)
				}
			}
			// Hand-written row on a rail no process runs.
			ghost := am.ConsumerMessage{ID: "ghost-1", CreatedAt: time.Now().UnixMilli(), AvailableAfter: time.Now().Add(-time.Minute).UnixMilli(),
				ConsumerType: "Gone", PayloadType: "Job", Payload: "{}", InsertID: "ghost-1", Rail: "ghost"}
			if err := db.Create(&ghost).Error; err != nil {
				t.Fatal(err)
			}
			// One of the slow rail's messages poisoned (MaxAttempts 1): the others are
			// delayed by an hour, so one batch runs only it.
			var slow am.ConsumerMessage
			if err := db.Where("rail = ?", "slow").Order("created_at, id").Take(&slow).Error; err != nil {
				t.Fatal(err)
			}
			if err := db.Model(&am.ConsumerMessage{}).Where("id <> ? AND consumer_type = ?", slow.ID, "Slow").
				Update("available_after", time.Now().Add(time.Hour).UnixMilli()).Error; err != nil {
				t.Fatal(err)
			}
			if err := db.Model(&am.ConsumerMessage{}).Where("consumer_type = ?", "Fast").
				Update("available_after", time.Now().Add(time.Hour).UnixMilli()).Error; err != nil {
				t.Fatal(err)
			}
			if _, err := p.ProcessBatch(ctx); err != nil {
				t.Fatal(err)
			}
			// Now: Fast 3 pending (none due) on "", Slow 2 pending (none due) + 1 poisoned
			// on "slow", Gone 1 due on "ghost"; "idle" configured and empty.

			out, errOut, code := run("--json", "stats", "--rails", "slow,idle")
			var got struct {
				Rails     []am.RailStats  `json:"rails"`
				Consumers []am.QueueStats `json:"consumers"`
			}
			if code != 0 || json.Unmarshal([]byte(out), &got) != nil {
				t.Fatalf("stats --json: %d %s %s", code, out, errOut)
			}
			for i := range got.Rails {
				got.Rails[i].OldestDueAge = got.Rails[i].OldestDueAge.Round(time.Hour)
			}
			wantRails := []am.RailStats{
				{Rail: "", Configured: true, Pending: 3},
				{Rail: "idle", Configured: true},
				{Rail: "slow", Configured: true, Pending: 2, Poisoned: 1},
				{Rail: "ghost", Pending: 1, Due: 1},
			}
			if len(got.Rails) != len(wantRails) {
				t.Fatalf("rails = %+v, want %+v", got.Rails, wantRails)
			}
			for i := range wantRails {
				if got.Rails[i] != wantRails[i] {
					t.Fatalf("rails[%d] = %+v, want %+v\n%s", i, got.Rails[i], wantRails[i], out)
				}
			}
			wantConsumers := map[string]string{"Fast": "", "Gone": "ghost", "Slow": "slow"}
			if len(got.Consumers) != len(wantConsumers) {
				t.Fatalf("consumers = %+v", got.Consumers)
			}
			for _, c := range got.Consumers {
				if rail, ok := wantConsumers[c.ConsumerType]; !ok || c.Rail != rail {
					t.Fatalf("consumer %+v: want rail %q", c, rail)
				}
			}

			out, _, code = run("stats", "--rails", "slow,idle")
			if code != 0 {
				t.Fatalf("stats: %d %s", code, out)
			}
			for _, line := range []string{
				`(?m)^RAIL\s+PENDING\s+RUNNING\s+DUE\s+OLDEST DUE\s+POISONED\s+CONFIGURED$`,
				`(?m)^\(default\)\s+3\s+0\s+0\s+0s\s+0\s+yes$`,
				`(?m)^idle\s+0\s+0\s+0\s+0s\s+0\s+yes$`,
				`(?m)^slow\s+2\s+0\s+0\s+0s\s+1\s+yes$`,
				`(?m)^ghost\s+1\s+0\s+1\s+1m\S*\s+0\s+no$`,
				`(?m)^CONSUMER\s+RAIL\s+PENDING\s+RUNNING\s+DUE\s+OLDEST DUE\s+POISONED$`,
				`(?m)^Slow\s+slow\s+2\s+0\s+0\s+0s\s+1$`,
				`(?m)^Gone\s+ghost\s+1\s+0\s+1\s+`,
			} {
				if !regexp.MustCompile(line).MatchString(out) {
					t.Fatalf("stats text lacks %s:\n%s", line, out)
				}
			}
			// Without --rails the CLI cannot tell configured rails: no such column, and
			// only the rails holding messages besides the default.
			out, _, code = run("stats")
			if code != 0 || strings.Contains(out, "CONFIGURED") || strings.Contains(out, "idle") || !strings.Contains(out, "slow") {
				t.Fatalf("stats without --rails: %d\n%s", code, out)
			}
			if _, errOut, code := run("stats", "--rails", "Bad Name"); code != 2 || !strings.Contains(errOut, "Rails") {
				t.Fatalf("stats --rails with an invalid name: %d %s", code, errOut)
			}
		})
	}
}
