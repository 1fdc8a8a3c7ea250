package dialect

import (
	"slices"
	"strings"
	"testing"

	pgmigrations "github.com/asyncmonolith/asyncmonolith/migrations/postgres"
)

// TestStatementsPerDialect is the text each dialect generates for the engine's statements;
// run_test.go runs them on the real servers.
func TestStatementsPerDialect(t *testing.T) {
	t.Parallel()
	type want struct {
		insert, lockDue, fetch, setAside, deleteIDs, deleteLocated, updateLocated, poison, claim, keyset string
		rowLocks, lockFreeReadTx, preparesInserts                                                        bool
	}
	const poisonTail = "INSERT INTO poisoned_messages (id, created_at, available_after, attempts, consumer_type, payload_type, payload, insert_id, trace_id, span_id, last_error, poisoned_at, rail) SELECT id, created_at, CASE id WHEN "
	cases := map[string]want{
		"postgres": {
			insert:        "INSERT INTO consumer_messages (id, created_at, available_after, attempts, consumer_type, payload_type, payload, insert_id) VALUES ($1,$2,$3,0,$4,$5,$6,$7),($8,$9,$10,0,$11,$12,$13,$14) ON CONFLICT (insert_id, consumer_type, pending) DO NOTHING",
			lockDue:       "SELECT id, available_after FROM consumer_messages WHERE rail = $1 AND available_after <= $2 ORDER BY available_after, created_at, id LIMIT $3 FOR UPDATE SKIP LOCKED",
			fetch:         "SELECT id, created_at, available_after, attempts, consumer_type, payload_type, payload, NULLIF(insert_id, id), trace_id, span_id, snoozes, ctid::text FROM consumer_messages WHERE rail = $1 AND available_after <= $2 ORDER BY available_after, created_at, id LIMIT $3 FOR UPDATE SKIP LOCKED",
			setAside:      "SELECT ctid::text FROM consumer_messages WHERE consumer_type = $1 AND available_after < $2 AND pending IS NOT NULL LIMIT $3 FOR UPDATE SKIP LOCKED",
			deleteIDs:     "DELETE FROM t WHERE id IN ($1,$2)",
			deleteLocated: "DELETE FROM t WHERE ctid = ANY($1::tid[]) AND available_after = $2 AND pending IS NULL",
			updateLocated: "UPDATE t SET a = $1, b = $2 WHERE ctid = ANY($3::tid[]) AND available_after = $4 AND pending IS NULL",
			poison:        poisonTail + "$1 THEN $2::bigint WHEN $3 THEN $4::bigint END, $5, consumer_type, payload_type, payload, insert_id, trace_id, span_id, $6, $7, rail FROM consumer_messages WHERE id IN ($8,$9) AND available_after = $10 AND pending IS NULL",
			claim:         "WITH due AS (SEL) UPDATE consumer_messages m SET available_after = CASE WHEN m.consumer_type IN ($4, $5) THEN $6::bigint ELSE $3::bigint END, pending = NULL FROM due, (SELECT set_config('synchronous_commit', 'off', true)) AS async WHERE m.id = due.id RETURNING m.id, m.created_at, due.available_after, m.attempts, m.consumer_type, m.payload_type, m.payload, NULLIF(m.insert_id, m.id), m.trace_id, m.span_id, m.snoozes, m.ctid::text",
			keyset:        "(a, b) > (?, ?)",
			rowLocks:      true, lockFreeReadTx: true,
		},
		"mysql": {
			insert:        "INSERT INTO consumer_messages (id, created_at, available_after, attempts, consumer_type, payload_type, payload, insert_id) VALUES (?,?,?,0,?,?,?,?),(?,?,?,0,?,?,?,?) ON DUPLICATE KEY UPDATE id = id",
			lockDue:       "SELECT id, available_after FROM consumer_messages WHERE rail = ? AND available_after <= ? ORDER BY available_after, created_at, id LIMIT ? FOR UPDATE SKIP LOCKED",
			fetch:         "SELECT id, created_at, available_after, attempts, consumer_type, payload_type, payload, NULLIF(insert_id, id), trace_id, span_id, snoozes, id FROM consumer_messages WHERE rail = ? AND available_after <= ? ORDER BY available_after, created_at, id LIMIT ? FOR UPDATE SKIP LOCKED",
			setAside:      "SELECT id FROM consumer_messages WHERE consumer_type = ? AND available_after < ? AND pending IS NOT NULL LIMIT ? FOR UPDATE SKIP LOCKED",
			deleteIDs:     "DELETE t FROM (SELECT ? AS id UNION ALL SELECT ? AS id) d STRAIGHT_JOIN t t FORCE INDEX (PRIMARY) ON t.id = d.id",
			deleteLocated: "DELETE t FROM (SELECT ? AS id UNION ALL SELECT ? AS id) d STRAIGHT_JOIN t t FORCE INDEX (PRIMARY) ON t.id = d.id WHERE t.available_after = ? AND t.pending IS NULL",
			updateLocated: "UPDATE (SELECT ? AS id UNION ALL SELECT ? AS id) d STRAIGHT_JOIN t t FORCE INDEX (PRIMARY) ON t.id = d.id SET t.a = ?, t.b = ? WHERE t.available_after = ? AND t.pending IS NULL",
			poison:        poisonTail + "? THEN ? WHEN ? THEN ? END, ?, consumer_type, payload_type, payload, insert_id, trace_id, span_id, ?, ?, rail FROM consumer_messages WHERE id IN (?,?) AND available_after = ? AND pending IS NULL",
			keyset:        "((a > ?) OR (a = ? AND b > ?))",
			rowLocks:      true, lockFreeReadTx: true,
		},
		"sqlite": {
			insert:          "INSERT INTO consumer_messages (id, created_at, available_after, attempts, consumer_type, payload_type, payload, insert_id) VALUES (?,?,?,0,?,?,?,?),(?,?,?,0,?,?,?,?) ON CONFLICT (insert_id, consumer_type, pending) DO NOTHING",
			lockDue:         "SELECT id, available_after FROM consumer_messages WHERE rail = ? AND available_after <= ? ORDER BY available_after, created_at, id LIMIT ?",
			fetch:           "SELECT id, created_at, available_after, attempts, consumer_type, payload_type, payload, NULLIF(insert_id, id), trace_id, span_id, snoozes, id FROM consumer_messages WHERE rail = ? AND available_after <= ? ORDER BY available_after, created_at, id LIMIT ?",
			setAside:        "SELECT id FROM consumer_messages WHERE consumer_type = ? AND available_after < ? AND pending IS NOT NULL LIMIT ?",
			deleteIDs:       "DELETE FROM t WHERE id IN (?,?)",
			deleteLocated:   "DELETE FROM t WHERE id IN (?,?) AND available_after = ? AND pending IS NULL",
			updateLocated:   "UPDATE t SET a = ?, b = ? WHERE id IN (?,?) AND available_after = ? AND pending IS NULL",
			poison:          poisonTail + "? THEN ? WHEN ? THEN ? END, ?, consumer_type, payload_type, payload, insert_id, trace_id, span_id, ?, ?, rail FROM consumer_messages WHERE id IN (?,?) AND available_after = ? AND pending IS NULL",
			keyset:          "(a, b) > (?, ?)",
			preparesInserts: true,
		},
	}
	for _, name := range Names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			w := cases[name]
			d := byName(t, name)
			check := func(what, got, want string) {
				t.Helper()
				if got != want {
					t.Errorf("%s:\n got %s\nwant %s", what, got, want)
				}
			}
			check("InsertMessages", InsertMessages(d, 2, false, true, false), w.insert)
			check("LockDue", LockDue(d, ClaimKeys, ClaimFilter{}), w.lockDue)
			check("ClaimFetch", ClaimFetch(d, ClaimFilter{}), w.fetch)
			check("SetAsideLocked", SetAsideLocked(d), w.setAside)
			check("DeleteByIDs", d.DeleteByIDs("t", 2), w.deleteIDs)
			q, args := d.DeleteLocated("t", []string{"(0,1)", "(0,2)"}, 7)
			check("DeleteLocated", q, w.deleteLocated)
			if last := args[len(args)-1]; last != int64(7) {
				t.Errorf("DeleteLocated's last argument = %v, want the lease 7", last)
			}
			q, _ = d.UpdateLocated("t", []string{"a", "b"}, []any{1, 2}, []string{"(0,1)", "(0,2)"}, 7)
			check("UpdateLocated", q, w.updateLocated)
			q, args = PoisonCopy(d, []Poisoned{{"a", 1}, {"b", 2}}, 3, "boom", 9, 7)
			check("PoisonCopy", q, w.poison)
			if want := []any{"a", int64(1), "b", int64(2), 3, "boom", int64(9), "a", "b", int64(7)}; !slices.Equal(args, want) {
				t.Errorf("PoisonCopy's arguments = %v, want %v", args, want)
			}
			check("ClaimSQL", d.ClaimSQL("SEL", 2, []int{2}), w.claim)
			q, args = d.Keyset([]string{"a", "b"}, ">", []any{1, 2})
			check("Keyset", q, w.keyset)
			if strings.Count(q, "?") != len(args) {
				t.Errorf("Keyset: %d placeholders, %d arguments", strings.Count(q, "?"), len(args))
			}
			if d.RowLocks() != w.rowLocks || d.LockFreeReadTx() != w.lockFreeReadTx || d.PreparesInserts() != w.preparesInserts {
				t.Errorf("RowLocks, LockFreeReadTx, PreparesInserts = %v, %v, %v; want %v, %v, %v", d.RowLocks(),
					d.LockFreeReadTx(), d.PreparesInserts(), w.rowLocks, w.lockFreeReadTx, w.preparesInserts)
			}
			for _, trace := range []bool{false, true} {
				for _, rail := range []bool{false, true} {
					q := InsertMessages(d, 3, trace, false, rail)
					if n := strings.Count(q, "?") + strings.Count(q, "$"); n != 3*InsertParams(trace, rail) {
						t.Errorf("InsertMessages(3 rows, trace %v, rail %v) has %d parameters, want %d: %s", trace, rail, n, 3*InsertParams(trace, rail), q)
					}
					if trace != strings.Contains(q, "trace_id, span_id") || rail != strings.Contains(q, ", rail)") || strings.Contains(q, d.DedupSuffix()) {
						t.Errorf("InsertMessages(trace %v, rail %v, no dedup) = %s", trace, rail, q)
					}
				}
			}
			// Filters: only one consumer type, or all but some; the due time and the limit follow.
			only, but := LockDue(d, ClaimKeys, ClaimFilter{Only: true}), LockDue(d, ClaimKeys, ClaimFilter{Types: 2})
			if !strings.Contains(only, "rail = "+d.Placeholder(1)+" AND consumer_type = "+d.Placeholder(2)+" AND available_after <= "+d.Placeholder(3)) ||
				!strings.Contains(only, "LIMIT "+d.Placeholder(4)) {
				t.Errorf("LockDue(Only) = %s", only)
			}
			if !strings.Contains(but, "consumer_type NOT IN ("+d.Placeholder(2)+","+d.Placeholder(3)+") AND available_after <= "+d.Placeholder(4)) ||
				!strings.Contains(but, "LIMIT "+d.Placeholder(5)) {
				t.Errorf("LockDue(Types 2) = %s", but)
			}
			if (ClaimFilter{}).Params() != 1 || (ClaimFilter{Only: true}).Params() != 2 || (ClaimFilter{Types: 3}).Params() != 4 {
				t.Error("ClaimFilter.Params counts the rail and the consumer types")
			}
		})
	}
}

func byName(t *testing.T, name string) Dialect {
	t.Helper()
	switch name {
	case "postgres":
		return postgres{}
	case "mysql":
		return mysqlDialect{}
	case "sqlite":
		return sqlite{}
	}
	t.Fatalf("no dialect %q", name)
	return nil
}

// TestTextStorable: PostgreSQL's text refuses NUL bytes and invalid UTF-8; the others take
// any string.
func TestTextStorable(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		s    string
		want map[string]bool
	}{
		{"plain", map[string]bool{"postgres": true, "mysql": true, "sqlite": true}},
		{"nul\x00byte", map[string]bool{"postgres": false, "mysql": true, "sqlite": true}},
		{"bad\xffutf8", map[string]bool{"postgres": false, "mysql": true, "sqlite": true}},
		{"", map[string]bool{"postgres": true, "mysql": true, "sqlite": true}},
	} {
		for _, name := range Names {
			if got := byName(t, name).TextStorable(c.s); got != c.want[name] {
				t.Errorf("%s: TextStorable(%q) = %v, want %v", name, c.s, got, c.want[name])
			}
		}
	}
}

func TestCanonical(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres": "postgres", "postgresql": "postgres", "pgx": "postgres",
		"mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite", "sqlite3": "sqlite",
		"oracle": "", "": "", "Postgres": "",
	} {
		got, ok := Canonical(in)
		if got != want || ok != (want != "") {
			t.Errorf("Canonical(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestParseSavepointAndIsDML(t *testing.T) {
	t.Parallel()
	for q, want := range map[string]struct {
		op   SavepointOp
		name string
	}{
		"SAVEPOINT sp0x1234":             {SavepointTake, "sp0x1234"},
		"savepoint sp0x1234":             {SavepointTake, "sp0x1234"},
		"ROLLBACK TO SAVEPOINT sp0x1234": {SavepointRollback, "sp0x1234"},
		"ROLLBACK TO sp0x1234":           {SavepointRollback, "sp0x1234"},
		"RELEASE SAVEPOINT sp0x1234":     {SavepointRelease, "sp0x1234"},
		"RELEASE sp0x12345":              {SavepointRelease, "sp0x12345"},
		"SELECT * FROM savepoints":       {SavepointNone, ""},
		"ROLLBACK":                       {SavepointNone, ""},
	} {
		if op, name := ParseSavepoint(q); op != want.op || name != want.name {
			t.Errorf("ParseSavepoint(%q) = %v, %q; want %v, %q", q, op, name, want.op, want.name)
		}
	}
	for q, want := range map[string]bool{
		"INSERT INTO t VALUES (1)": true, " update t set a = 1": true, "(DELETE FROM t)": true,
		"REPLACE INTO t VALUES (1)": true, "MERGE INTO t": true, "SELECT 1": false, "WITH x AS (SELECT 1) SELECT 1": false,
		"": false, "CREATE TABLE t (a int)": false,
	} {
		if got := IsDML(q); got != want {
			t.Errorf("IsDML(%q) = %v, want %v", q, got, want)
		}
	}
}

// TestNotifySQLIsTheMigration: EnsureNotify runs the statements of the trigger's
// migration file, split where each ends.
func TestNotifySQLIsTheMigration(t *testing.T) {
	t.Parallel()
	if len(NotifySQL) != 3 {
		t.Fatalf("NotifySQL has %d statements, want 3: %q", len(NotifySQL), NotifySQL)
	}
	for i, prefix := range []string{"CREATE OR REPLACE FUNCTION asyncmonolith_notify()", "DROP TRIGGER IF EXISTS asyncmonolith_notify", "CREATE TRIGGER asyncmonolith_notify AFTER INSERT"} {
		if !strings.HasPrefix(NotifySQL[i], prefix) || strings.HasSuffix(NotifySQL[i], ";") {
			t.Errorf("NotifySQL[%d] = %q, want it to start with %q, without its ';'", i, NotifySQL[i], prefix)
		}
	}
	if !strings.Contains(NotifySQL[0], "RETURN NULL; END $$") {
		t.Errorf("the function body was split: %q", NotifySQL[0])
	}
	for _, s := range NotifySQL {
		if !strings.Contains(pgmigrations.NotifyUp, s) {
			t.Errorf("%q is not in the migration file", s)
		}
	}
	if got := SplitStatements("-- c\nA;\n\nB\n  x;\n-- end\nC"); !slices.Equal(got, []string{"A", "B\n  x", "C"}) {
		t.Errorf("SplitStatements = %q", got)
	}
}
