// Package migrations holds asyncmonolith's schema as SQL, one folder per database
// (postgres, mysql, sqlite), in golang-migrate's file layout
// (NNNN_name.up.sql / NNNN_name.down.sql), embedded in the binary.
//
// Use it in one of three ways:
//   - Up and Down apply the files from Go and record the version in
//     asyncmonolith_schema_migrations;
//   - FS gives one database's files as an fs.FS, for golang-migrate's iofs source or goose;
//   - SQL returns the statements as text, to copy into your own migration tool.
//
// The schema equals what Plugin.Migrate (GORM AutoMigrate of the models) creates; a test
// checks that on every database.
package migrations

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/asyncmonolith/asyncmonolith/internal/dialect"
	"gorm.io/gorm"
)

//go:embed postgres/*.sql mysql/*.sql sqlite/*.sql
var files embed.FS

// All is every database's files, under postgres/, mysql/ and sqlite/.
var All fs.FS = files

// Dialects are the databases with a schema here.
var Dialects = []string{"postgres", "mysql", "sqlite"}

// VersionTable records the applied version (golang-migrate's layout: version, dirty).
const VersionTable = "asyncmonolith_schema_migrations"

// ErrUnknownDialect reports a database with no schema here.
var ErrUnknownDialect = errors.New("migrations: unknown dialect (want postgres, mysql or sqlite)")

// ErrDirty reports a previous migration that failed half-way; fix the schema by hand, then
// correct the version table.
var ErrDirty = errors.New("migrations: schema is dirty")

// Migration is one numbered step.
type Migration struct {
	Version int
	Name    string
	Up      string
	Down    string
}

// FS returns the files of one dialect ("postgres", "mysql" or "sqlite").
func FS(dialect string) (fs.FS, error) {
	d, err := normalize(dialect)
	if err != nil {
		return nil, err
	}
	return fs.Sub(files, d)
}

// List returns a dialect's migrations in version order.
func List(dialect string) ([]Migration, error) {
	d, err := normalize(dialect)
	if err != nil {
		return nil, err
	}
	entries, err := fs.ReadDir(files, d)
	if err != nil {
		return nil, err
	}
	byVersion := map[int]*Migration{}
	for _, e := range entries {
		name := e.Name()
		num, rest, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migrations: bad file name %s", name)
		}
		body, err := fs.ReadFile(files, path.Join(d, name))
		if err != nil {
			return nil, err
		}
		m := byVersion[v]
		if m == nil {
			m = &Migration{Version: v}
			byVersion[v] = m
		}
		switch {
		case strings.HasSuffix(rest, ".up.sql"):
			m.Name, m.Up = strings.TrimSuffix(rest, ".up.sql"), string(body)
		case strings.HasSuffix(rest, ".down.sql"):
			m.Down = string(body)
		}
	}
	out := make([]Migration, 0, len(byVersion))
	for _, m := range byVersion {
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// SQL returns all up (or, in reverse order, all down) migrations of a dialect as one text.
func SQL(dialect string, up bool) (string, error) {
	ms, err := List(dialect)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if up {
		for _, m := range ms {
			b.WriteString(m.Up)
		}
	} else {
		for i := len(ms) - 1; i >= 0; i-- {
			b.WriteString(ms[i].Down)
		}
	}
	return b.String(), nil
}

// Statements splits a migration's text into statements (one per `;` at a line end),
// dropping comments, for drivers that run one statement per call.
func Statements(sql string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(sql, "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(t, ";") {
			out = append(out, strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"))
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}

// Up applies every migration newer than the recorded version, all in one transaction where
// the database allows DDL in one (PostgreSQL, SQLite; MySQL commits DDL implicitly), each
// in a savepoint of it. It holds the lock Migrate takes, so that instances starting at once
// run Up (or Migrate) one after another.
func Up(ctx context.Context, db *gorm.DB) error {
	return migrate(ctx, db, true)
}

// Down reverts every applied migration.
func Down(ctx context.Context, db *gorm.DB) error {
	return migrate(ctx, db, false)
}

// Version returns the applied version (0: none) and whether it is dirty. It reads in a
// transaction, which resolver plugins (gorm.io/plugin/dbresolver) keep on the source, as
// every statement of Up and Down is.
func Version(ctx context.Context, db *gorm.DB) (int, bool, error) {
	var row struct { // columns named in tags, whatever the application's NamingStrategy
		Version int  `gorm:"column:version"`
		Dirty   bool `gorm:"column:dirty"`
	}
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if !tx.Migrator().HasTable(VersionTable) {
			return nil
		}
		return tx.Table(VersionTable).Select("version, dirty").Order("version DESC").Limit(1).Scan(&row).Error
	})
	return row.Version, row.Dirty, err
}

// migrate runs Up or Down in one transaction holding the migrate lock Migrate takes, so
// that instances starting at once run them one after another (each step's transaction is
// a savepoint of it).
func migrate(ctx context.Context, db *gorm.DB, up bool) error {
	ms, err := List(db.Dialector.Name())
	if err != nil {
		return err
	}
	d, err := dialect.For(db)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	err = dialect.MigrateTx(ctx, db.Session(&gorm.Session{NewDB: true}), d, func(tx *gorm.DB) error {
		return apply(ctx, tx, ms, up)
	})
	if err != nil && !strings.HasPrefix(err.Error(), "migrations: ") {
		return fmt.Errorf("migrations: %w", err) // the lock's, or ctx's
	}
	return err
}

// apply applies (up) or reverts the migrations ms beyond or within the recorded version.
func apply(ctx context.Context, db *gorm.DB, ms []Migration, up bool) error {
	if err := db.Exec("CREATE TABLE IF NOT EXISTS " + VersionTable + " (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)").Error; err != nil {
		return fmt.Errorf("migrations: create %s: %w", VersionTable, err)
	}
	current, dirty, err := Version(ctx, db)
	if err != nil {
		return fmt.Errorf("migrations: read version: %w", err)
	}
	if dirty {
		return fmt.Errorf("%w at version %d", ErrDirty, current)
	}
	steps := ms
	if !up {
		steps = nil
		for i := len(ms) - 1; i >= 0; i-- {
			if ms[i].Version <= current {
				steps = append(steps, ms[i])
			}
		}
	}
	for _, m := range steps {
		if up && m.Version <= current {
			continue
		}
		body, next := m.Up, m.Version
		if !up {
			body = m.Down
			next = 0
			for _, prev := range ms {
				if prev.Version < m.Version {
					next = prev.Version
				}
			}
		}
		if err := setVersion(db, m.Version, true); err != nil {
			return err
		}
		err := db.Transaction(func(tx *gorm.DB) error {
			for _, stmt := range Statements(body) {
				if err := tx.Exec(stmt).Error; err != nil {
					return fmt.Errorf("migrations: version %d (%s): %w", m.Version, m.Name, err)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if err := setVersion(db, next, false); err != nil {
			return err
		}
	}
	return nil
}

func setVersion(db *gorm.DB, version int, dirty bool) error {
	return db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Exec("DELETE FROM " + VersionTable).Error; err != nil {
			return err
		}
		if version == 0 && !dirty {
			return nil
		}
		return tx.Exec("INSERT INTO "+VersionTable+" (version, dirty) VALUES (?, ?)", version, dirty).Error
	})
}

func normalize(name string) (string, error) {
	if d, ok := dialect.Canonical(name); ok {
		return d, nil
	}
	return "", fmt.Errorf("%w: %q", ErrUnknownDialect, name)
}
