// Package testdb opens an isolated database for one test: a fresh PostgreSQL schema, a
// fresh MariaDB/MySQL database, or a fresh SQLite file, dropped when the test ends.
//
// Servers are found through AM_POSTGRES_DSN and AM_MYSQL_DSN (defaults: the local servers
// of the development machines). When a server is unreachable the test is skipped with a
// loud message, except under CI=true, where it fails.
package testdb

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Dialects are the databases every conformance test runs on.
var Dialects = []string{"postgres", "mysql", "sqlite"}

// Server DSNs without a database; each test gets its own.
func postgresDSN() string {
	if v := os.Getenv("AM_POSTGRES_DSN"); v != "" {
		return v
	}
	return "host=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable"
}

func mysqlServerDSN() string {
	if v := os.Getenv("AM_MYSQL_DSN"); v != "" {
		return v
	}
	return "root:@tcp(127.0.0.1:3306)/"
}

var (
	reachMu sync.Mutex
	reach   = map[string]error{}
)

// reachable pings a server once per test binary.
func reachable(dialect string) error {
	reachMu.Lock()
	defer reachMu.Unlock()
	if err, ok := reach[dialect]; ok {
		return err
	}
	var err error
	switch dialect {
	case "postgres":
		err = ping("pgx", postgresDSN())
	case "mysql":
		err = ping("mysql", mysqlServerDSN())
	}
	reach[dialect] = err
	return err
}

func ping(driver, dsn string) error {
	var db *gorm.DB
	var err error
	if driver == "pgx" {
		db, err = gorm.Open(postgres.Open(dsn), quiet())
	} else {
		db, err = gorm.Open(mysql.Open(dsn), quiet())
	}
	if err != nil {
		return err
	}
	sqlDB, _ := db.DB()
	defer sqlDB.Close()
	return sqlDB.Ping()
}

func quiet() *gorm.Config { return &gorm.Config{Logger: logger.Discard} }

// Options adjust Open.
type Options struct {
	// Config is the gorm.Config to open with (a Logger is set if nil).
	Config *gorm.Config
	// MaxOpenConns caps the pool (0: database/sql's default).
	MaxOpenConns int
}

// Open returns a *gorm.DB on a fresh, empty database of the given dialect.
func Open(t testing.TB, dialect string, opts ...Options) *gorm.DB {
	t.Helper()
	o, cfg := options(opts)
	if dialect != "sqlite" {
		if err := reachable(dialect); err != nil {
			msg := fmt.Sprintf("!!! %s is NOT reachable (%v): its tests do not run. Start it (see CONTRIBUTING.md) or set AM_%s_DSN.",
				dialect, err, strings.ToUpper(dialect))
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	name := "am_" + randomHex(6)
	var db *gorm.DB
	var err error
	switch dialect {
	case "postgres":
		admin := mustOpen(t, postgres.Open(postgresDSN()), quiet())
		mustExec(t, admin, "CREATE SCHEMA "+name)
		closeDB(admin)
		db, err = gorm.Open(postgres.Open(postgresDSN()+" search_path="+name), cfg)
		t.Cleanup(func() {
			admin := mustOpen(t, postgres.Open(postgresDSN()), quiet())
			admin.Exec("DROP SCHEMA " + name + " CASCADE")
			closeDB(admin)
		})
	case "mysql":
		admin := mustOpen(t, mysql.Open(mysqlServerDSN()), quiet())
		mustExec(t, admin, "CREATE DATABASE "+name)
		closeDB(admin)
		db, err = gorm.Open(mysql.Open(MySQLDSN(name)), cfg)
		t.Cleanup(func() {
			admin := mustOpen(t, mysql.Open(mysqlServerDSN()), quiet())
			admin.Exec("DROP DATABASE " + name)
			closeDB(admin)
		})
	case "sqlite":
		db, err = gorm.Open(sqlite.Open(SQLiteDSN(filepath.Join(tempDir(t), name+".db"))), cfg)
	default:
		t.Fatalf("testdb: unknown dialect %q", dialect)
	}
	if err != nil {
		t.Fatalf("testdb: open %s: %v", dialect, err)
	}
	o.pool(t, db)
	return db
}

// options returns the Options given (or none) and the gorm.Config to open with.
func options(opts []Options) (Options, *gorm.Config) {
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	cfg := o.Config
	if cfg == nil {
		cfg = quiet()
	} else if cfg.Logger == nil {
		cfg.Logger = logger.Discard
	}
	return o, cfg
}

// pool applies MaxOpenConns to db's pool and closes it when the test ends.
func (o Options) pool(t testing.TB, db *gorm.DB) {
	t.Helper()
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	if o.MaxOpenConns > 0 {
		sqlDB.SetMaxOpenConns(o.MaxOpenConns)
	}
	t.Cleanup(func() { sqlDB.Close() })
}

// MySQLDSN is the DSN of database name on the MySQL server, with the settings the library
// recommends (parseTime, interpolateParams).
func MySQLDSN(name string) string {
	base := mysqlServerDSN()
	base = strings.TrimSuffix(base, "/")
	if i := strings.Index(base, "/"); i >= 0 && strings.Contains(base[i:], "?") {
		base = base[:i]
	}
	return base + "/" + name + "?parseTime=true&interpolateParams=true"
}

// tempDir is t.TempDir, but its removal tries again for a while: database/sql's Close does
// not wait for a connection still being opened (the plugin prepares its inserts in the
// background), and SQLite can create a file in the directory while it is being removed
// ("directory not empty").
func tempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "amtest")
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	t.Cleanup(func() {
		var err error
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if err = os.RemoveAll(dir); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Errorf("testdb: remove %s: %v", dir, err)
		}
	})
	return dir
}

// SQLiteDSN is the recommended DSN for a SQLite file used with concurrency.
func SQLiteDSN(path string) string {
	return "file:" + path + "?_journal_mode=WAL&_busy_timeout=5000&_txlock=immediate"
}

// PostgresDSN returns the server DSN with search_path set to schema.
func PostgresDSN(schema string) string { return postgresDSN() + " search_path=" + schema }

func mustOpen(t testing.TB, d gorm.Dialector, cfg *gorm.Config) *gorm.DB {
	t.Helper()
	db, err := gorm.Open(d, cfg)
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	return db
}

func mustExec(t testing.TB, db *gorm.DB, q string) {
	t.Helper()
	if err := db.Exec(q).Error; err != nil {
		t.Fatalf("testdb: %s: %v", q, err)
	}
}

func closeDB(db *gorm.DB) {
	if s, err := db.DB(); err == nil {
		s.Close()
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Eventually polls cond every 5 ms until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: "+format, append([]any{timeout}, args...)...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var _ = sql.ErrNoRows

// OpenDSN is Open, also returning a DSN that reaches the same fresh database, for code
// under test that opens its own connections (a CLI, a child process).
func OpenDSN(t testing.TB, dialect string, opts ...Options) (string, *gorm.DB) {
	t.Helper()
	db := Open(t, dialect, opts...)
	var name string
	switch dialect {
	case "postgres":
		db.Raw("SELECT current_schema()").Scan(&name)
		return PostgresDSN(name), db
	case "mysql":
		db.Raw("SELECT DATABASE()").Scan(&name)
		return MySQLDSN(name), db
	default:
		db.Raw("SELECT file FROM pragma_database_list WHERE name = 'main'").Scan(&name)
		return SQLiteDSN(name), db
	}
}
