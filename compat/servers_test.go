package compat_test

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// The servers, as the root module's internal/testdb finds them: AM_POSTGRES_DSN and
// AM_MYSQL_DSN, or the development machines' local servers. An unreachable server skips
// its tests loudly, and fails them under CI=true.

var dialects = []string{"postgres", "mysql"}

func postgresServerDSN() string {
	if v := os.Getenv("AM_POSTGRES_DSN"); v != "" {
		return v
	}
	return "host=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable"
}

func mysqlServerDSN() string {
	if v := os.Getenv("AM_MYSQL_DSN"); v != "" {
		return strings.TrimSuffix(v, "/")
	}
	return "root:@tcp(127.0.0.1:3306)"
}

var (
	reachMu sync.Mutex
	reach   = map[string]error{}
)

// requireServer skips (or, under CI=true, fails) the test when dialect's server is not
// reachable; it pings once per test binary.
func requireServer(t *testing.T, dialect string) {
	t.Helper()
	reachMu.Lock()
	err, ok := reach[dialect]
	if !ok {
		var db *sql.DB
		if db, err = sql.Open(driverName(dialect), serverDSN(dialect)); err == nil {
			err = db.Ping()
			db.Close()
		}
		reach[dialect] = err
	}
	reachMu.Unlock()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("!!! %s is NOT reachable (%v): its compat tests do not run. Start it or set AM_%s_DSN.",
		dialect, err, strings.ToUpper(dialect))
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func driverName(dialect string) string {
	if dialect == "postgres" {
		return "pgx"
	}
	return "mysql"
}

func serverDSN(dialect string) string {
	if dialect == "postgres" {
		return postgresServerDSN()
	}
	return mysqlServerDSN() + "/"
}

// freshDSN creates an empty PostgreSQL schema or MariaDB/MySQL database, dropped when the
// test ends, and returns a DSN that reaches it.
func freshDSN(t *testing.T, dialect string) string {
	t.Helper()
	requireServer(t, dialect)
	name := "amc_" + randomHex(6)
	admin, err := sql.Open(driverName(dialect), serverDSN(dialect))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	create, drop := "CREATE SCHEMA "+name, "DROP SCHEMA "+name+" CASCADE"
	if dialect == "mysql" {
		create, drop = "CREATE DATABASE "+name, "DROP DATABASE "+name
	}
	if _, err := admin.Exec(create); err != nil {
		t.Fatalf("%s: %v", create, err)
	}
	t.Cleanup(func() {
		admin, err := sql.Open(driverName(dialect), serverDSN(dialect))
		if err != nil {
			t.Error(err)
			return
		}
		defer admin.Close()
		if _, err := admin.Exec(drop); err != nil {
			t.Errorf("%s: %v", drop, err)
		}
	})
	if dialect == "postgres" {
		return postgresServerDSN() + " search_path=" + name
	}
	return mysqlServerDSN() + "/" + name + "?parseTime=true&interpolateParams=true"
}

// dialector opens dsn with the gorm driver of dialect.
func dialector(dialect, dsn string) gorm.Dialector {
	if dialect == "postgres" {
		return postgres.Open(dsn)
	}
	return mysql.Open(dsn)
}

// open opens dsn with cfg (quiet unless it has a Logger) and closes the pool when the test
// ends.
func open(t *testing.T, dialect, dsn string, cfg *gorm.Config) *gorm.DB {
	t.Helper()
	if cfg == nil {
		cfg = &gorm.Config{}
	}
	if cfg.Logger == nil {
		cfg.Logger = logger.Discard
	}
	db, err := gorm.Open(dialector(dialect, dsn), cfg)
	if err != nil {
		t.Fatalf("open %s: %v", dialect, err)
	}
	closeWhenDone(t, db)
	return db
}

// closeWhenDone closes db's pool when the test ends.
func closeWhenDone(t *testing.T, db *gorm.DB) {
	t.Helper()
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	sqlDB.SetMaxOpenConns(8) // the machine's PostgreSQL is shared
	t.Cleanup(func() { sqlDB.Close() })
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
