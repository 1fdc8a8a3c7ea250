package asyncmonolith

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
)

// TestRailClaimUsesTheRailIndex checks the plan of every claim shape (a rail's claim, the
// claim that leaves out its limited consumers, one limited consumer's claim) on a table
// where another rail holds most rows: the locking read is a range of
// idx_consumer_messages_rail_fetch, not a scan of the table or of another rail's rows.
func TestRailClaimUsesTheRailIndex(t *testing.T) {
	t.Parallel()
	for _, dialect := range testdb.Dialects {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			db, p := internalPlugin(t, dialect, Config{Rails: map[string]RailConfig{"slow": {}}})
			// 5,000 rows on the default rail, 20 on "slow": statistics that make a scan
			// of the table clearly worse than the index range.
			rows := make([]ConsumerMessage, 0, 500)
			// (batches of 500: SQLite allows 32,766 parameters per statement)
			for i := range 5020 {
				rail := ""
				if i%251 == 0 {
					rail = "slow"
				}
				rows = append(rows, ConsumerMessage{ID: fmt.Sprintf("m%05d", i), CreatedAt: int64(i), AvailableAfter: int64(i),
					ConsumerType: fmt.Sprintf("C%d", i%7), PayloadType: "P", Payload: "{}", InsertID: fmt.Sprintf("m%05d", i), Rail: rail})
				if len(rows) == cap(rows) {
					if err := db.Create(&rows).Error; err != nil {
						t.Fatal(err)
					}
					rows = rows[:0]
				}
			}
			if err := db.Create(&rows).Error; err != nil {
				t.Fatal(err)
			}
			switch dialect {
			case "postgres":
				db.Exec("ANALYZE consumer_messages")
			case "mysql":
				db.Exec("ANALYZE TABLE consumer_messages")
			case "sqlite":
				db.Exec("ANALYZE")
			}
			plan := p.leases()
			for _, f := range []struct {
				filter claimFilter
				args   []any
			}{
				{claimFilter{}, []any{"slow"}},
				{claimFilter{Types: 2}, []any{"slow", "C1", "C2"}},
				{claimFilter{Only: true}, []any{"slow", "C1"}},
			} {
				cs := p.claimSQL(100, plan, f.filter)
				q := cs.fetch
				if q == "" { // PostgreSQL: the locking SELECT is the CTE of the one statement
					q = cs.one[len("WITH due AS ("):strings.Index(cs.one, ") UPDATE")]
				}
				args := append(f.args, time.Now().UnixMilli(), 100)
				var lines []string
				explain := "EXPLAIN "
				if dialect == "sqlite" {
					explain = "EXPLAIN QUERY PLAN "
				}
				rs, err := db.Raw(explain+q, args...).Rows()
				if err != nil {
					t.Fatalf("%s: %v", q, err)
				}
				cols, _ := rs.Columns()
				for rs.Next() {
					vals := make([]any, len(cols))
					ptrs := make([]any, len(cols))
					for i := range vals {
						ptrs[i] = &vals[i]
					}
					if err := rs.Scan(ptrs...); err != nil {
						t.Fatal(err)
					}
					var b strings.Builder
					for i, v := range vals {
						if bs, ok := v.([]byte); ok {
							v = string(bs)
						}
						fmt.Fprintf(&b, "%s=%v ", cols[i], v)
					}
					lines = append(lines, b.String())
				}
				rs.Close()
				text := strings.Join(lines, "\n")
				t.Logf("%+v:\n%s", f.filter, text)
				if !strings.Contains(text, "idx_consumer_messages_rail_fetch") {
					t.Errorf("claim %+v does not use idx_consumer_messages_rail_fetch:\n%s\n%s", f.filter, q, text)
				}
				if strings.Contains(text, "filesort") || strings.Contains(text, "Sort  (") || strings.Contains(text, "TEMP B-TREE") {
					t.Errorf("claim %+v sorts instead of reading the index in order:\n%s", f.filter, text)
				}
				if strings.Contains(text, "Seq Scan") || strings.Contains(text, "type=ALL") || strings.Contains(text, "SCAN consumer_messages\n") {
					t.Errorf("claim %+v scans the table:\n%s", f.filter, text)
				}
			}
		})
	}
}

// TestClaimTakesOnlyItsRail claims for each rail from a table holding three rails' due
// messages, with and without a limited consumer: every claimed row is of the claimed rail,
// and each rail's rows are all claimed by its own claims.
func TestClaimTakesOnlyItsRail(t *testing.T) {
	t.Parallel()
	for _, dialect := range testdb.Dialects {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db, p := internalPlugin(t, dialect, Config{Rails: map[string]RailConfig{"slow": {}}})
			limited := &registration{consumerType: "L", payloadType: "P", rail: "slow", limit: &limiter{limit: 2}}
			if err := p.registry.add(limited); err != nil {
				t.Fatal(err)
			}
			var rows []ConsumerMessage
			for i := range 60 {
				rail := []string{"", "slow", "gone"}[i%3]
				ct := []string{"A", "L"}[i%2]
				rows = append(rows, ConsumerMessage{ID: fmt.Sprintf("m%02d", i), CreatedAt: int64(i), AvailableAfter: int64(i),
					ConsumerType: ct, PayloadType: "P", Payload: "{}", InsertID: fmt.Sprintf("m%02d", i), Rail: rail})
			}
			if err := db.Create(&rows).Error; err != nil {
				t.Fatal(err)
			}
			claimedOn := map[string]int{}
			for _, rl := range []string{"", "slow"} {
				for {
					c, err := p.claim(ctx, rl, 7)
					if err != nil {
						t.Fatal(err)
					}
					if len(c.rows) == 0 {
						break
					}
					var limitedHere int
					for i, r := range c.rows {
						var stored ConsumerMessage
						if err := db.Where("id = ?", r.ID).Take(&stored).Error; err != nil {
							t.Fatal(err)
						}
						if stored.Rail != rl {
							t.Fatalf("the claim of rail %q took %s of rail %q", rl, r.ID, stored.Rail)
						}
						var lim *limiter
						if c.limits != nil { // nil: a claim of a rail without limited consumers
							lim = c.limits[i]
						}
						if (lim != nil) != (rl == "slow" && r.ConsumerType == "L") {
							t.Fatalf("rail %q, %s of %s: limiter %v", rl, r.ID, r.ConsumerType, lim)
						}
						if lim != nil {
							limitedHere++
						}
						claimedOn[rl]++
					}
					if limitedHere > 2 || limited.limit.running != limitedHere {
						t.Fatalf("one claim took %d messages of L (limit 2), %d slots held", limitedHere, limited.limit.running)
					}
					c.releaseLimits() // as the runs ending would
				}
			}
			var gone int64
			db.Model(&ConsumerMessage{}).Where("rail = ? AND pending IS NOT NULL", "gone").Count(&gone)
			if claimedOn[""] != 20 || claimedOn["slow"] != 20 || gone != 20 {
				t.Fatalf("claimed %v, %d of rail gone left pending; want 20 per configured rail and gone untouched", claimedOn, gone)
			}
		})
	}
}
