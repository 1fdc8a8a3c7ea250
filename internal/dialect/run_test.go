package dialect_test

import (
	"context"
	"database/sql"
	"slices"
	"testing"

	"github.com/asyncmonolith/asyncmonolith/internal/dialect"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"github.com/asyncmonolith/asyncmonolith/migrations"
	"gorm.io/gorm"
)

// TestStatementsRunOnEachServer runs the engine's statements, as each dialect writes them,
// on the real server, on the schema of migrations/: insert (deduplicated), claim (the one
// statement, or the locking read and the update), set aside, poison, the stats, delete.
func TestStatementsRunOnEachServer(t *testing.T) {
	t.Parallel()
	for _, name := range testdb.Dialects {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := testdb.Open(t, name)
			if err := migrations.Up(ctx, db); err != nil {
				t.Fatal(err)
			}
			d, err := dialect.For(db)
			if err != nil {
				t.Fatal(err)
			}
			if d.Name() != name {
				t.Fatalf("For(%s).Name() = %q", name, d.Name())
			}
			sqlDB, err := db.DB()
			if err != nil {
				t.Fatal(err)
			}
			exec := func(q string, args ...any) int64 {
				t.Helper()
				res, err := sqlDB.ExecContext(ctx, q, args...)
				if err != nil {
					t.Fatalf("%s: %v", q, err)
				}
				n, err := res.RowsAffected()
				if err != nil {
					t.Fatal(err)
				}
				return n
			}

			// Three messages due at 10, 20, 30 for "c"; "m3" has an insert id of its own.
			row := func(id string, due int64, insertID string) []any {
				return []any{id, int64(1), due, "c", "p", "{}", insertID}
			}
			args := slices.Concat(row("m1", 10, "m1"), row("m2", 20, "m2"), row("m3", 30, "k3"))
			if n := exec(dialect.InsertMessages(d, 3, false, true, false), args...); n != 3 {
				t.Fatalf("inserted %d rows, want 3", n)
			}
			// A duplicate pending insert id is skipped, without an error.
			dup := append(row("m4", 40, "k3"), "trace", "span")
			if n := exec(dialect.InsertMessages(d, 1, true, true, false), dup...); n != 0 {
				t.Fatalf("the duplicate insert id was written (%d rows)", n)
			}
			if err := db.Exec(dialect.InsertMessages(d, 1, true, false, false), dup...).Error; !d.UniqueViolation(err) {
				t.Fatalf("without dedup the duplicate's error is %v, want a unique violation", err)
			}

			// Claim the two due at 25, with lease 1000 (consumer "c" in a group of its own: 2000).
			const lease, groupLease = int64(1000), int64(2000)
			type claimed struct {
				id, insertID string
				due          int64
				locator      string
			}
			var got []claimed
			scan := func(rs *sql.Rows) {
				t.Helper()
				defer rs.Close()
				for rs.Next() {
					var c claimed
					var createdAt, attempts, snoozes int64
					var ct, pt, payload string
					var insertID, trace, span sql.NullString
					if err := rs.Scan(&c.id, &createdAt, &c.due, &attempts, &ct, &pt, &payload, &insertID, &trace, &span, &snoozes, &c.locator); err != nil {
						t.Fatal(err)
					}
					c.insertID = insertID.String
					got = append(got, c)
				}
				if err := rs.Err(); err != nil {
					t.Fatal(err)
				}
			}
			if one := d.ClaimSQL(dialect.LockDue(d, dialect.ClaimKeys, dialect.ClaimFilter{}), 3, []int{1}); one != "" {
				rs, err := sqlDB.QueryContext(ctx, one, "", int64(25), 10, lease, "c", groupLease)
				if err != nil {
					t.Fatalf("%s: %v", one, err)
				}
				scan(rs)
			} else {
				tx, err := sqlDB.BeginTx(ctx, d.ProcessorTxOptions())
				if err != nil {
					t.Fatal(err)
				}
				rs, err := tx.QueryContext(ctx, dialect.ClaimFetch(d, dialect.ClaimFilter{}), "", int64(25), 10)
				if err != nil {
					t.Fatal(err)
				}
				scan(rs)
				var locs []string
				for _, c := range got {
					locs = append(locs, c.locator)
				}
				q, args := d.UpdateLocated("consumer_messages", []string{"available_after", "pending"}, []any{groupLease, nil}, locs, 0)
				if _, err := tx.ExecContext(ctx, q, args...); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
				if err := tx.Commit(); err != nil {
					t.Fatal(err)
				}
			}
			slices.SortFunc(got, func(a, b claimed) int { return int(a.due - b.due) })
			if len(got) != 2 || got[0].id != "m1" || got[1].id != "m2" || got[0].due != 10 || got[1].due != 20 {
				t.Fatalf("claimed %+v, want m1 (due 10) and m2 (due 20)", got)
			}
			if got[0].insertID != "" {
				t.Errorf("m1's insert id read as %q, want NULL (it is the id)", got[0].insertID)
			}
			var leased []int64
			db.Raw("SELECT available_after FROM consumer_messages WHERE pending IS NULL ORDER BY id").Scan(&leased)
			if !slices.Equal(leased, []int64{groupLease, groupLease}) {
				t.Fatalf("claimed rows' leases = %v, want the group's %d twice", leased, groupLease)
			}

			// The set-aside read finds m3 (pending, due before 100), not the claimed ones.
			rs, err := sqlDB.QueryContext(ctx, dialect.SetAsideLocked(d), "c", int64(100), 10)
			if err != nil {
				t.Fatal(err)
			}
			var aside []string
			for rs.Next() {
				var l string
				if err := rs.Scan(&l); err != nil {
					t.Fatal(err)
				}
				aside = append(aside, l)
			}
			rs.Close()
			if len(aside) != 1 {
				t.Fatalf("set aside %v, want m3 only", aside)
			}

			// Poison m1 under the right lease; a wrong lease copies nothing.
			if q, args := dialect.PoisonCopy(d, []dialect.Poisoned{{ID: "m1", Due: 10}}, 5, "boom", 99, groupLease+1); exec(q, args...) != 0 {
				t.Fatal("a copy under a lost lease was made")
			}
			if q, args := dialect.PoisonCopy(d, []dialect.Poisoned{{ID: "m1", Due: 10}}, 5, "boom", 99, groupLease); exec(q, args...) != 1 {
				t.Fatal("m1 was not copied")
			}
			var p struct {
				AvailableAfter, Attempts, PoisonedAt int64
				LastError                            string
			}
			db.Raw("SELECT available_after, attempts, poisoned_at, last_error FROM poisoned_messages WHERE id = 'm1'").Scan(&p)
			if p.AvailableAfter != 10 || p.Attempts != 5 || p.PoisonedAt != 99 || p.LastError != "boom" {
				t.Fatalf("poisoned copy = %+v", p)
			}
			q, args := d.DeleteLocated("consumer_messages", []string{got[0].locator}, groupLease)
			if n := exec(q, args...); n != 1 {
				t.Fatalf("DeleteLocated deleted %d rows, want 1", n)
			}

			var pending []struct {
				ConsumerType string
				Pending, Due int64
				OldestDue    *int64
			}
			if err := db.Raw(dialect.PendingStats, int64(25), int64(25)).Scan(&pending).Error; err != nil {
				t.Fatal(err)
			}
			if len(pending) != 1 || pending[0].Pending != 2 || pending[0].Due != 0 || pending[0].OldestDue != nil {
				t.Fatalf("PendingStats = %+v, want 2 pending for c, none due at 25", pending)
			}
			var poisoned []struct {
				ConsumerType string
				N            int64
			}
			if err := db.Raw(dialect.PoisonedStats).Scan(&poisoned).Error; err != nil {
				t.Fatal(err)
			}
			if len(poisoned) != 1 || poisoned[0].N != 1 {
				t.Fatalf("PoisonedStats = %+v", poisoned)
			}
			if n := exec(d.DeleteByIDs("consumer_messages", 2), "m2", "m3"); n != 2 {
				t.Fatalf("DeleteByIDs deleted %d rows, want 2", n)
			}

			// Keyset pages through (a, b) in order.
			testKeyset(t, db, d)
		})
	}
}

func testKeyset(t *testing.T, db *gorm.DB, d dialect.Dialect) {
	t.Helper()
	if err := db.Exec("CREATE TABLE ks (a int, b varchar(10), PRIMARY KEY (a, b))").Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Exec("INSERT INTO ks (a, b) VALUES (1, 'x'), (1, 'y'), (2, 'a'), (3, 'b')").Error; err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		op   string
		want []string
	}{{">", []string{"1y", "2a", "3b"}}, {"<", []string{"1x"}}} {
		cond, args := d.Keyset([]string{"a", "b"}, c.op, []any{1, "x"})
		if c.op == "<" {
			cond, args = d.Keyset([]string{"a", "b"}, c.op, []any{1, "y"})
		}
		var rows []struct {
			A int
			B string
		}
		if err := db.Table("ks").Where(cond, args...).Order("a, b").Find(&rows).Error; err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range rows {
			got = append(got, string(rune('0'+r.A))+r.B)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("Keyset %s: %v, want %v", c.op, got, c.want)
		}
	}
}
