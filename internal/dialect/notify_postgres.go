package dialect

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"gorm.io/gorm"
)

// NotifySQL is the PostgreSQL trigger that announces committed messages: once per INSERT
// statement into consumer_messages, on the channel "asyncmonolith:<schema>". PostgreSQL
// delivers notifications at commit, and drops them on rollback.
var NotifySQL = []string{
	`CREATE OR REPLACE FUNCTION asyncmonolith_notify() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('asyncmonolith:' || TG_TABLE_SCHEMA, ''); RETURN NULL; END $$`,
	`DROP TRIGGER IF EXISTS asyncmonolith_notify ON consumer_messages`,
	`CREATE TRIGGER asyncmonolith_notify AFTER INSERT ON consumer_messages FOR EACH STATEMENT EXECUTE FUNCTION asyncmonolith_notify()`,
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
// PostgreSQL driver uses it by default).
func (postgres) Listen(ctx context.Context, db *sql.DB, wake func()) error {
	if err := poolHasSpare(db); err != nil {
		return err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("%w: driver connection is %T, not pgx", ErrNoListen, dc)
		}
		pc := sc.Conn()
		var schema string
		if err := pc.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
			return err
		}
		err := listenOn(ctx, pc, schema, wake)
		// The connection is in LISTEN state or broken: never hand it back to the pool.
		return fmt.Errorf("%w (%w)", driver.ErrBadConn, err)
	})
}

// ListenDirect listens on a pgx connection of its own to dsn. The channel is named after
// the pool's current schema, where the messages are written, whatever dsn's search_path.
func (postgres) ListenDirect(ctx context.Context, db *sql.DB, dsn string, wake func()) error {
	var schema, database string
	if err := db.QueryRowContext(ctx, "SELECT current_schema(), current_database()").Scan(&schema, &database); err != nil {
		return err
	}
	pc, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = pc.Close(closeCtx)
	}()
	// Notifications are per database: a listener on another one would hear nothing, silently.
	var listenDB string
	if err := pc.QueryRow(ctx, "SELECT current_database()").Scan(&listenDB); err != nil {
		return err
	}
	if listenDB != database {
		return fmt.Errorf("the listen DSN reaches database %q, the pool database %q: its notifications would never arrive", listenDB, database)
	}
	return listenOn(ctx, pc, schema, wake)
}

// CheckListenDSN parses dsn as ListenDirect will. pgx's parse errors quote the DSN, so
// only the fact that it failed is reported.
func (postgres) CheckListenDSN(dsn string) error {
	if _, err := pgx.ParseConfig(dsn); err != nil {
		return errors.New("does not parse as a pgx DSN (key=value or postgres:// URL)")
	}
	return nil
}

// listenOn runs LISTEN on pc and calls wake for every notification until ctx is done or
// the connection fails; it always returns an error.
func listenOn(ctx context.Context, pc *pgx.Conn, schema string, wake func()) error {
	if _, err := pc.Exec(ctx, "LISTEN "+pgx.Identifier{"asyncmonolith:" + schema}.Sanitize()); err != nil {
		return err
	}
	wake() // commits made before the LISTEN (at start, or during a reconnect) were not heard
	for {
		if _, err := pc.WaitForNotification(ctx); err != nil {
			return err
		}
		wake()
	}
}
