package migrations_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/dialect"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"github.com/asyncmonolith/asyncmonolith/migrations"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

var tables = []string{"consumer_messages", "poisoned_messages", "scheduled_messages"}

// exactColumns must compare byte for byte on every database.
var exactColumns = dialect.ExactColumns

// schema describes tables as the database's catalog reports them.
func schema(t *testing.T, db *gorm.DB) string {
	t.Helper()
	var lines []string
	m := db.Migrator()
	for _, table := range tables {
		cols, err := m.ColumnTypes(table)
		if err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		for _, c := range cols {
			null, _ := c.Nullable()
			pk, _ := c.PrimaryKey()
			length, _ := c.Length()
			def, _ := c.DefaultValue()
			lines = append(lines, fmt.Sprintf("%s.%s %s(%d) null=%v pk=%v default=%q",
				table, c.Name(), strings.ToLower(c.DatabaseTypeName()), length, null, pk, def))
		}
		lines = append(lines, indexes(t, db, table)...)
		lines = append(lines, collations(t, db, table)...)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// indexes lists a table's secondary indexes with their columns in key order, read from
// each database's catalog (GORM's GetIndexes does not keep the order on PostgreSQL).
func indexes(t *testing.T, db *gorm.DB, table string) []string {
	t.Helper()
	type col struct {
		Name, Col string
		Uniq      bool
	}
	var cols []col
	var err error
	switch db.Dialector.Name() {
	case "postgres":
		err = db.Raw(`SELECT i.relname AS name, a.attname AS col, ix.indisunique AS uniq
			FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid JOIN pg_class c ON c.oid = ix.indrelid
			JOIN LATERAL unnest(ix.indkey) WITH ORDINALITY k(attnum, n) ON true
			JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
			WHERE c.relname = ? AND c.relnamespace = current_schema()::regnamespace AND NOT ix.indisprimary
			ORDER BY i.relname, k.n`, table).Scan(&cols).Error
	case "mysql":
		err = db.Raw(`SELECT index_name AS name, column_name AS col, non_unique = 0 AS uniq
			FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = ? AND index_name <> 'PRIMARY'
			ORDER BY index_name, seq_in_index`, table).Scan(&cols).Error
	case "sqlite":
		err = db.Raw(`SELECT il.name AS name, ii.name AS col, il."unique" AS uniq
			FROM pragma_index_list(?) il JOIN pragma_index_info(il.name) ii
			WHERE il.origin <> 'pk' ORDER BY il.name, ii.seqno`, table).Scan(&cols).Error
	}
	if err != nil {
		t.Fatalf("indexes of %s: %v", table, err)
	}
	var out []string
	var cur string
	var names []string
	var uniq bool
	flush := func() {
		if cur != "" {
			out = append(out, fmt.Sprintf("%s index %s %v unique=%v", table, cur, names, uniq))
		}
	}
	for _, c := range cols {
		if c.Name != cur {
			flush()
			cur, names, uniq = c.Name, nil, c.Uniq
		}
		names = append(names, c.Col)
	}
	flush()
	return out
}

// collations lists the collation of each text column where the catalog reports it
// (PostgreSQL and MySQL); SQLite's columns all compare BINARY unless declared otherwise,
// which the CREATE statements would show.
func collations(t *testing.T, db *gorm.DB, table string) []string {
	t.Helper()
	var where string
	switch db.Dialector.Name() {
	case "postgres":
		where = "table_schema = current_schema()"
	case "mysql":
		where = "table_schema = DATABASE()"
	default:
		return nil
	}
	var cols []struct {
		Col       string
		Collation *string
	}
	if err := db.Raw(`SELECT column_name AS col, collation_name AS collation FROM information_schema.columns
		WHERE `+where+` AND table_name = ? ORDER BY ordinal_position`, table).Scan(&cols).Error; err != nil {
		t.Fatalf("collations of %s: %v", table, err)
	}
	var out []string
	for _, c := range cols {
		if c.Collation != nil {
			out = append(out, fmt.Sprintf("%s.%s collate %s", table, c.Col, *c.Collation))
		}
	}
	return out
}

// ddlRecorder records the DDL a session sends.
type ddlRecorder struct {
	logger.Interface
	mu    *sync.Mutex
	stmts *[]string
}

func (r ddlRecorder) Trace(ctx context.Context, begin time.Time, fc func() (string, int64), err error) {
	sql, _ := fc()
	u := strings.ToUpper(strings.TrimSpace(sql))
	for _, p := range []string{"CREATE", "ALTER", "DROP"} {
		if strings.HasPrefix(u, p) {
			r.mu.Lock()
			*r.stmts = append(*r.stmts, sql)
			r.mu.Unlock()
		}
	}
}

func TestSQLFilesMatchAutoMigrate(t *testing.T) {
	t.Parallel()
	for _, dialect := range testdb.Dialects {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			fromSQL := testdb.Open(t, dialect)
			if err := migrations.Up(ctx, fromSQL); err != nil {
				t.Fatal(err)
			}
			fromGORM := testdb.Open(t, dialect)
			if err := am.New(am.Config{}).Migrate(ctx, fromGORM); err != nil {
				t.Fatal(err)
			}
			a, b := schema(t, fromSQL), schema(t, fromGORM)
			if a != b {
				t.Fatalf("schemas differ\n--- SQL files:\n%s\n--- AutoMigrate:\n%s", a, b)
			}
			if !strings.Contains(a, "ux_consumer_messages_pending_insert_id [insert_id consumer_type pending] unique=true") ||
				!strings.Contains(a, "idx_consumer_messages_rail_fetch [rail available_after created_at id]") {
				t.Fatalf("indexes missing:\n%s", a)
			}
			if dialect == "mysql" {
				for table, cols := range exactColumns {
					for _, c := range cols {
						if !strings.Contains(a, table+"."+c+" collate utf8mb4_nopad_bin") {
							t.Fatalf("%s.%s does not compare exactly:\n%s", table, c, a)
						}
					}
				}
			}
			// AutoMigrate over the SQL-created schema has nothing to change.
			var mu sync.Mutex
			var ddl []string
			rec := fromSQL.Session(&gorm.Session{Logger: ddlRecorder{logger.Discard, &mu, &ddl}})
			if err := am.New(am.Config{}).Migrate(ctx, rec); err != nil {
				t.Fatal(err)
			}
			if len(ddl) > 0 {
				t.Fatalf("AutoMigrate altered the SQL-created schema:\n%s", strings.Join(ddl, "\n"))
			}
		})
	}
}

func TestUpIsIdempotentAndDownRemovesEverything(t *testing.T) {
	t.Parallel()
	for _, dialect := range testdb.Dialects {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := testdb.Open(t, dialect)
			for range 2 {
				if err := migrations.Up(ctx, db); err != nil {
					t.Fatal(err)
				}
			}
			all, _ := migrations.List(dialect)
			last := all[len(all)-1].Version
			v, dirty, err := migrations.Version(ctx, db)
			if err != nil || v != last || dirty {
				t.Fatalf("version = %d dirty=%v err=%v, want %d", v, dirty, err, last)
			}
			// The dedup index works on the SQL-created schema.
			row := am.ConsumerMessage{ID: "a", CreatedAt: 1, AvailableAfter: 1, ConsumerType: "C", PayloadType: "P", Payload: "{}", InsertID: "i"}
			if err := db.Create(&row).Error; err != nil {
				t.Fatal(err)
			}
			row.ID = "b"
			if err := db.Create(&row).Error; err == nil {
				t.Fatal("a second pending row with the same (insert_id, consumer_type) was accepted")
			}
			if err := migrations.Down(ctx, db); err != nil {
				t.Fatal(err)
			}
			for _, table := range tables {
				if db.Migrator().HasTable(table) {
					t.Fatalf("%s survived Down", table)
				}
			}
			if v, _, _ := migrations.Version(ctx, db); v != 0 {
				t.Fatalf("version after Down = %d", v)
			}
			if err := migrations.Up(ctx, db); err != nil {
				t.Fatalf("Up after Down: %v", err)
			}
		})
	}
}

func TestUnknownDialect(t *testing.T) {
	t.Parallel()
	if _, err := migrations.SQL("oracle", true); !errors.Is(err, migrations.ErrUnknownDialect) {
		t.Fatalf("err = %v", err)
	}
	if _, err := migrations.FS("mssql"); !errors.Is(err, migrations.ErrUnknownDialect) {
		t.Fatalf("err = %v", err)
	}
	for _, d := range migrations.Dialects {
		up, err := migrations.SQL(d, true)
		if err != nil || len(migrations.Statements(up)) < 3 {
			t.Fatalf("%s: %d statements, err %v", d, len(migrations.Statements(up)), err)
		}
	}
}

func ExampleSQL() {
	up, _ := migrations.SQL("postgres", true)
	for _, stmt := range migrations.Statements(up) {
		fmt.Println(strings.SplitN(stmt, " (", 2)[0])
	}
	// Output:
	// CREATE TABLE "consumer_messages"
	// CREATE UNIQUE INDEX "ux_consumer_messages_insert_id_consumer_type" ON "consumer_messages"
	// CREATE INDEX "idx_consumer_messages_fetch" ON "consumer_messages"
	// CREATE TABLE "poisoned_messages"
	// CREATE INDEX "idx_poisoned_messages_poisoned_at" ON "poisoned_messages"
	// CREATE INDEX "idx_poisoned_messages_consumer_type" ON "poisoned_messages"
	// CREATE TABLE "scheduled_messages"
	// CREATE INDEX "idx_scheduled_messages_available_after" ON "scheduled_messages"
	// CREATE INDEX "idx_scheduled_messages_tag" ON "scheduled_messages"
	// CREATE OR REPLACE FUNCTION asyncmonolith_notify() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('asyncmonolith:' || TG_TABLE_SCHEMA, ''); RETURN NULL; END $$
	// DROP TRIGGER IF EXISTS asyncmonolith_notify ON consumer_messages
	// CREATE TRIGGER asyncmonolith_notify AFTER INSERT ON consumer_messages FOR EACH STATEMENT EXECUTE FUNCTION asyncmonolith_notify()
	// ALTER TABLE "consumer_messages" ADD COLUMN "pending" boolean DEFAULT true CONSTRAINT "chk_consumer_messages_pending" CHECK
	// DROP INDEX IF EXISTS "ux_consumer_messages_insert_id_consumer_type"
	// CREATE UNIQUE INDEX "ux_consumer_messages_pending_insert_id" ON "consumer_messages"
	// ALTER TABLE "consumer_messages" ADD COLUMN "rail" varchar(64) NOT NULL DEFAULT ''
	// ALTER TABLE "poisoned_messages" ADD COLUMN "rail" varchar(64) NOT NULL DEFAULT ''
	// CREATE INDEX "idx_consumer_messages_rail_fetch" ON "consumer_messages"
	// DROP INDEX IF EXISTS "idx_consumer_messages_fetch"
	// ALTER TABLE "consumer_messages" ADD COLUMN "snoozes" bigint NOT NULL DEFAULT 0
}

// TestUpgradeMakesNamesExact upgrades a database made by the first release (0001 only,
// with a pending message), through the SQL files and through Plugin.Migrate: afterwards
// insert ids and consumer types that differ only in case or a trailing space are distinct
// keys, and the existing row is intact.
func TestUpgradeMakesNamesExact(t *testing.T) {
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
				for _, stmt := range migrations.Statements(all[0].Up) {
					if err := db.Exec(stmt).Error; err != nil {
						t.Fatal(err)
					}
				}
				old := am.ConsumerMessage{ID: "a", CreatedAt: 1, AvailableAfter: 1, ConsumerType: "Audit", PayloadType: "P", Payload: "{}", InsertID: "Order:42"}
				if err := db.Omit("Pending", "Rail", "Snoozes").Create(&old).Error; err != nil { // 0001 has no pending, rail or snoozes column
					t.Fatal(err)
				}
				switch path {
				case "sql":
					if err := db.Exec("CREATE TABLE " + migrations.VersionTable + " (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)").Error; err != nil {
						t.Fatal(err)
					}
					if err := db.Exec("INSERT INTO "+migrations.VersionTable+" (version, dirty) VALUES (?, ?)", all[0].Version, false).Error; err != nil {
						t.Fatal(err)
					}
					if err := migrations.Up(ctx, db); err != nil {
						t.Fatal(err)
					}
				case "automigrate":
					if err := am.New(am.Config{}).Migrate(ctx, db); err != nil {
						t.Fatal(err)
					}
				}
				for i, k := range [][2]string{{"order:42", "Audit"}, {"Order:42 ", "Audit"}, {"ORDER:42", "Audit"}, {"Order:42", "audit"}} {
					row := old
					row.ID, row.InsertID, row.ConsumerType = fmt.Sprint("b", i), k[0], k[1]
					if err := db.Create(&row).Error; err != nil {
						t.Fatalf("(%q, %q) after the upgrade: %v", k[0], k[1], err)
					}
				}
				var kept am.ConsumerMessage
				if err := db.Where("id = ?", "a").Take(&kept).Error; err != nil || kept.InsertID != "Order:42" || kept.ConsumerType != "Audit" {
					t.Fatalf("the existing row after the upgrade: %+v, %v", kept, err)
				}
				dup := old
				dup.ID = "c"
				if err := db.Create(&dup).Error; err == nil {
					t.Fatal("an exact duplicate of a pending (insert_id, consumer_type) was accepted after the upgrade")
				}
			})
		}
	}
}

// TestUpgradeAddsSnoozes upgrades a database at the version before the snoozes column, with
// a pending, a running and a poisoned message in it, through the SQL files and through
// Plugin.Migrate: every message is kept as it was, with 0 snoozes, and Down reverts the step.
func TestUpgradeAddsSnoozes(t *testing.T) {
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
				last := all[len(all)-1]
				if last.Name != "snoozes" {
					t.Fatalf("the last migration is %d_%s, want the snoozes step", last.Version, last.Name)
				}
				if err := db.Exec("CREATE TABLE " + migrations.VersionTable + " (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)").Error; err != nil {
					t.Fatal(err)
				}
				for _, m := range all[:len(all)-1] {
					for _, stmt := range migrations.Statements(m.Up) {
						if err := db.Exec(stmt).Error; err != nil {
							t.Fatalf("%d_%s: %v", m.Version, m.Name, err)
						}
					}
				}
				if err := db.Exec("INSERT INTO "+migrations.VersionTable+" (version, dirty) VALUES (?, ?)", all[len(all)-2].Version, false).Error; err != nil {
					t.Fatal(err)
				}
				pending := am.ConsumerMessage{ID: "p", CreatedAt: 1, AvailableAfter: 5, Attempts: 2, ConsumerType: "C", PayloadType: "P", Payload: `{"n":1}`, InsertID: "i1"}
				running := am.ConsumerMessage{ID: "r", CreatedAt: 2, AvailableAfter: 9, Attempts: 1, ConsumerType: "C", PayloadType: "P", Payload: `{"n":2}`, InsertID: "i2"}
				if err := db.Omit("Snoozes").Create(&pending).Error; err != nil {
					t.Fatal(err)
				}
				if err := db.Omit("Snoozes").Create(&running).Error; err != nil {
					t.Fatal(err)
				}
				if err := db.Exec("UPDATE consumer_messages SET pending = NULL WHERE id = 'r'").Error; err != nil {
					t.Fatal(err)
				}
				poisoned := am.PoisonedMessage{ID: "x", CreatedAt: 3, AvailableAfter: 4, Attempts: 5, ConsumerType: "C", PayloadType: "P", Payload: "{}", InsertID: "i3", LastError: "boom", PoisonedAt: 7}
				if err := db.Create(&poisoned).Error; err != nil {
					t.Fatal(err)
				}
				switch path {
				case "sql":
					if err := migrations.Up(ctx, db); err != nil {
						t.Fatal(err)
					}
				case "automigrate":
					if err := am.New(am.Config{}).Migrate(ctx, db); err != nil {
						t.Fatal(err)
					}
				}
				var rows []am.ConsumerMessage
				if err := db.Order("id").Find(&rows).Error; err != nil {
					t.Fatal(err)
				}
				if len(rows) != 2 {
					t.Fatalf("%d messages after the upgrade, want 2: %+v", len(rows), rows)
				}
				for i, want := range []am.ConsumerMessage{pending, running} {
					got := rows[i]
					if got.ID != want.ID || got.Attempts != want.Attempts || got.AvailableAfter != want.AvailableAfter || got.Payload != want.Payload || got.Snoozes != 0 {
						t.Fatalf("message %s after the upgrade: %+v", want.ID, got)
					}
					if (got.Pending == nil) != (want.ID == "r") {
						t.Fatalf("message %s after the upgrade: pending %v", want.ID, got.Pending)
					}
				}
				var kept am.PoisonedMessage
				if err := db.Where("id = ?", "x").Take(&kept).Error; err != nil || kept.LastError != "boom" || kept.Attempts != 5 {
					t.Fatalf("the poisoned message after the upgrade: %+v, %v", kept, err)
				}
				if path != "sql" {
					return
				}
				if err := db.Model(&am.ConsumerMessage{}).Where("id = ?", "p").Update("snoozes", 3).Error; err != nil {
					t.Fatalf("write snoozes: %v", err)
				}
				if err := migrations.Down(ctx, db); err != nil {
					t.Fatalf("Down: %v", err)
				}
			})
		}
	}
}
