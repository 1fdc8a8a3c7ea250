package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "github.com/go-sql-driver/mysql" // database/sql driver for the MySQL floor
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver for the PostgreSQL floor
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

func serverDSN(c config) string {
	if c.dsn != "" {
		return c.dsn
	}
	switch c.dialect {
	case "postgres":
		return "host=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable application_name=am_bench"
	case "mysql":
		return "root:@tcp(127.0.0.1:3306)/"
	}
	return ""
}

// newSchema creates a fresh PostgreSQL schema, MySQL database or SQLite file and returns its
// name and a function that drops it.
func newSchema(c config, prefix string) (name string, drop func(), err error) {
	err = retryTooMany(func() (err error) {
		name, drop, err = newSchemaOnce(c, prefix)
		return err
	})
	return name, drop, err
}

// retryTooMany runs f again (up to 10 times, 2 s apart) when the server refused a
// connection for having too many clients: the PostgreSQL server here is shared with other
// engineers' test suites, whose connections come and go (they were seen to fill all 100).
func retryTooMany(f func() error) error {
	for try := 0; ; try++ {
		err := f()
		if err == nil || try == 10 || !strings.Contains(err.Error(), "53300") {
			return err
		}
		fmt.Fprintln(os.Stderr, "  the server has too many clients; trying again in 2 s:", err)
		time.Sleep(2 * time.Second)
	}
}

func newSchemaOnce(c config, prefix string) (string, func(), error) {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := prefix + hex.EncodeToString(b)
	switch c.dialect {
	case "postgres":
		admin, err := sql.Open("pgx", serverDSN(c))
		if err != nil {
			return "", nil, err
		}
		defer admin.Close()
		if _, err := admin.Exec("CREATE SCHEMA " + name); err != nil {
			return "", nil, err
		}
		return name, func() { dropSchema(c, "DROP SCHEMA "+name+" CASCADE") }, nil
	case "mysql":
		admin, err := sql.Open("mysql", serverDSN(c))
		if err != nil {
			return "", nil, err
		}
		defer admin.Close()
		if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
			return "", nil, err
		}
		return name, func() { dropSchema(c, "DROP DATABASE "+name) }, nil
	case "sqlite":
		dir, err := os.MkdirTemp("", "am-bench-")
		if err != nil {
			return "", nil, err
		}
		return filepath.Join(dir, name+".db"), func() { os.RemoveAll(dir) }, nil
	}
	return "", nil, fmt.Errorf("unknown -db %q", c.dialect)
}

func dropSchema(c config, stmt string) {
	driver := map[string]string{"postgres": "pgx", "mysql": "mysql"}[c.dialect]
	if admin, err := sql.Open(driver, serverDSN(c)); err == nil {
		_, _ = admin.Exec(stmt)
		admin.Close()
	}
}

// dsnFor is the DSN of a schema made by newSchema.
func dsnFor(c config, schema string) string {
	switch c.dialect {
	case "postgres":
		return serverDSN(c) + " search_path=" + schema
	case "mysql":
		base := strings.TrimSuffix(serverDSN(c), "/")
		if i := strings.Index(base, "/"); i >= 0 {
			base = base[:i]
		}
		return base + "/" + schema + "?parseTime=true&interpolateParams=true"
	default:
		return "file:" + schema + "?_journal_mode=WAL&_busy_timeout=10000&_txlock=immediate"
	}
}

func openGorm(c config, schema string) (*gorm.DB, error) { return openGormDSN(c, dsnFor(c, schema)) }

// openGormDSN opens dsn (a dsnFor, perhaps with extra settings) with the bench's pool settings.
func openGormDSN(c config, dsn string) (*gorm.DB, error) {
	cfg := &gorm.Config{Logger: logger.Discard}
	var db *gorm.DB
	err := retryTooMany(func() (err error) {
		switch c.dialect {
		case "postgres":
			db, err = gorm.Open(postgres.Open(dsn), cfg)
		case "mysql":
			db, err = gorm.Open(mysql.Open(dsn), cfg)
		default:
			db, err = gorm.Open(sqlite.Open(dsn), cfg)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	sqlDB, _ := db.DB()
	sqlDB.SetMaxIdleConns(20)
	sqlDB.SetConnMaxIdleTime(time.Minute)
	return db, nil
}

// openRaw opens the schema with database/sql for the floors.
func openRaw(c config, schema string) (*sql.DB, error) {
	driver := map[string]string{"postgres": "pgx", "mysql": "mysql", "sqlite": "sqlite3"}[c.dialect]
	db, err := sql.Open(driver, dsnFor(c, schema))
	if err != nil {
		return nil, err
	}
	db.SetMaxIdleConns(20)
	return db, db.PingContext(context.Background())
}
