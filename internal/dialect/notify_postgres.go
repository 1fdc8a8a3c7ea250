package dialect

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"slices"
	"strings"

	pgmigrations "github.com/asyncmonolith/asyncmonolith/migrations/postgres"
	"gorm.io/gorm"
)

// NotifySQL is the PostgreSQL trigger that announces committed messages: once per INSERT
// statement into consumer_messages, on the channel "asyncmonolith:<schema>". PostgreSQL
// delivers notifications at commit, and drops them on rollback. It is the statements of
// the migration migrations/postgres/0002_notify.up.sql, the one source of the trigger.
var NotifySQL = SplitStatements(pgmigrations.NotifyUp)

// SplitStatements splits a migration file into its statements: each ends with ";" at the
// end of a line; lines starting with "--" are comments. (A ";" inside a statement, as in a
// function body, is followed by more text on its line.)
func SplitStatements(text string) []string {
	var stmts []string
	var cur strings.Builder
	for line := range strings.Lines(text) {
		line = strings.TrimRight(line, " \t\r\n")
		if strings.HasPrefix(strings.TrimSpace(line), "--") {
			continue
		}
		if cur.Len() > 0 && line != "" {
			cur.WriteByte('\n')
		}
		cur.WriteString(line)
		if strings.HasSuffix(line, ";") {
			if s := strings.TrimSpace(strings.TrimSuffix(cur.String(), ";")); s != "" {
				stmts = append(stmts, s)
			}
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		stmts = append(stmts, s)
	}
	return stmts
}

func (postgres) EnsureNotify(ctx context.Context, db *gorm.DB) error {
	var n int64
	err := db.WithContext(ctx).Raw(`SELECT COUNT(*) FROM pg_trigger WHERE tgname = 'asyncmonolith_notify' AND tgrelid = 'consumer_messages'::regclass`).Scan(&n).Error
	if err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	return db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		for _, stmt := range NotifySQL {
			if err := tx.Exec(stmt).Error; err != nil {
				return err
			}
		}
		return nil
	})
}

// EnsureExactNames has nothing to do: PostgreSQL's collations are deterministic unless a
// column is given a nondeterministic ICU collation, and varchar does not pad.
func (postgres) EnsureExactNames(context.Context, *gorm.DB) error { return nil }

// Listen holds one connection of the pool for LISTEN. It needs the pgx driver (GORM's
// PostgreSQL driver uses it by default); pgx.go reaches it without importing it.
func (postgres) Listen(ctx context.Context, db *sql.DB, wake func()) error {
	if err := poolHasSpare(db); err != nil {
		return err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	var schema string
	if err := conn.QueryRowContext(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return err
	}
	return listenOn(ctx, conn, schema, wake)
}

// ListenDirect listens on a pgx connection of its own to dsn. The channel is named after
// the pool's current schema, where the messages are written, whatever dsn's search_path.
func (postgres) ListenDirect(ctx context.Context, db *sql.DB, dsn string, wake func()) error {
	var schema, database string
	if err := db.QueryRowContext(ctx, "SELECT current_schema(), current_database()").Scan(&schema, &database); err != nil {
		return err
	}
	name, err := pgxDriverName()
	if err != nil {
		return err
	}
	ldb, err := sql.Open(name, dsn)
	if err != nil {
		return err
	}
	defer ldb.Close()
	conn, err := ldb.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	// Notifications are per database: a listener on another one would hear nothing, silently.
	var listenDB string
	if err := conn.QueryRowContext(ctx, "SELECT current_database()").Scan(&listenDB); err != nil {
		return err
	}
	if listenDB != database {
		return fmt.Errorf("the listen DSN reaches database %q, the pool database %q: its notifications would never arrive", listenDB, database)
	}
	return listenOn(ctx, conn, schema, wake)
}

// pgxDriverName is the database/sql name of pgx's driver, which gorm.io/driver/postgres
// registers (by importing pgx/v5/stdlib).
func pgxDriverName() (string, error) {
	for _, name := range []string{"pgx/v5", "pgx"} {
		if slices.Contains(sql.Drivers(), name) {
			return name, nil
		}
	}
	return "", errors.New("the database/sql driver pgx is not registered (gorm.io/driver/postgres registers it)")
}

// CheckListenDSN parses dsn as ListenDirect will: pgx's connector parses its DSN before it
// dials, and with a context that is already done it dials nothing. pgx's parse errors quote
// the DSN, so only the fact that it failed is reported.
func (postgres) CheckListenDSN(dsn string) error {
	name, err := pgxDriverName()
	if err != nil {
		return err
	}
	ldb, err := sql.Open(name, dsn)
	if err != nil {
		return errors.New("does not parse as a pgx DSN (key=value or postgres:// URL)")
	}
	defer ldb.Close()
	dc, ok := ldb.Driver().(driver.DriverContext)
	if !ok {
		return fmt.Errorf("the %s driver (%T) has no connector", name, ldb.Driver())
	}
	c, err := dc.OpenConnector(dsn)
	if err == nil {
		done, cancel := context.WithCancel(context.Background())
		cancel()
		var conn driver.Conn
		conn, err = c.Connect(done)
		if conn != nil {
			_ = conn.Close()
			return nil
		}
		if errors.Is(err, context.Canceled) {
			return nil // parsed, then stopped before dialling
		}
	}
	return errors.New("does not parse as a pgx DSN (key=value or postgres:// URL)")
}

// listenOn runs LISTEN on conn and calls wake for every notification until ctx is done or
// the connection fails; it always returns an error. The connection is then in LISTEN
// state or broken: it never goes back to its pool.
func listenOn(ctx context.Context, conn *sql.Conn, schema string, wake func()) error {
	err := conn.Raw(func(dc any) error {
		pc, err := pgxConnOf(dc)
		if err != nil {
			return err
		}
		if err := pc.exec(ctx, "LISTEN "+quoteIdent("asyncmonolith:"+schema)); err != nil {
			return fmt.Errorf("%w (%w)", driver.ErrBadConn, err)
		}
		wake() // commits made before the LISTEN (at start, or during a reconnect) were not heard
		for {
			if err := pc.waitForNotification(ctx); err != nil {
				return fmt.Errorf("%w (%w)", driver.ErrBadConn, err)
			}
			wake()
		}
	})
	return err
}

// quoteIdent quotes a PostgreSQL identifier, as pgx.Identifier.Sanitize does.
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(strings.ReplaceAll(s, "\x00", ""), `"`, `""`) + `"`
}
