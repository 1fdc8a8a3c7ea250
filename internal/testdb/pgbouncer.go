package testdb

import (
	"fmt"
	"os"
	"testing"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
)

// PgBouncerExecMode is the pgx setting a pool through PgBouncer in transaction mode needs:
// pgx's default statement cache names prepared statements per connection, and PgBouncer
// (1.18, Debian 12's) hands each transaction a different server connection, where they do
// not exist ("prepared statement … does not exist").
const PgBouncerExecMode = "default_query_exec_mode=exec"

// PgBouncer returns a *gorm.DB on a fresh PostgreSQL database reached through the
// PgBouncer in transaction mode at AM_PGBOUNCER_DSN (scripts/test.sh starts one), with
// PgBouncerExecMode, and a DSN of the same database straight to the server (for a
// listener: PgBouncer in transaction mode cannot relay LISTEN). The database is dropped
// when the test ends. Without AM_PGBOUNCER_DSN the test is skipped loudly, or fails
// under CI=true.
func PgBouncer(t testing.TB, opts ...Options) (*gorm.DB, string) {
	t.Helper()
	bouncer := os.Getenv("AM_PGBOUNCER_DSN")
	if bouncer == "" {
		msg := "!!! AM_PGBOUNCER_DSN is not set: the PgBouncer test does not run. Run ./scripts/test.sh (it starts one) or point AM_PGBOUNCER_DSN at a PgBouncer in transaction mode in front of AM_POSTGRES_DSN's server."
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if err := reachable("postgres"); err != nil {
		t.Fatalf("testdb: PgBouncer test without a reachable PostgreSQL: %v", err)
	}
	o, cfg := options(opts)
	name := "am_" + randomHex(6)
	admin := mustOpen(t, postgres.Open(postgresDSN()), quiet())
	mustExec(t, admin, "CREATE DATABASE "+name)
	closeDB(admin)
	t.Cleanup(func() {
		admin := mustOpen(t, postgres.Open(postgresDSN()), quiet())
		// PgBouncer keeps server connections to the database open: FORCE closes them.
		admin.Exec("DROP DATABASE " + name + " WITH (FORCE)")
		closeDB(admin)
	})
	db, err := gorm.Open(postgres.Open(fmt.Sprintf("%s dbname=%s %s", bouncer, name, PgBouncerExecMode)), cfg)
	if err != nil {
		t.Fatalf("testdb: open through PgBouncer: %v", err)
	}
	o.pool(t, db)
	return db, postgresDSN() + " dbname=" + name
}
