package dialect

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	gormmysql "gorm.io/driver/mysql"
	gormpostgres "gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// The classification of errors is checked against errors the real servers return, through
// the real drivers: the dialect recognises them without importing the drivers (errors.go),
// so a driver that changes its error types must fail here, not silently in production.

// errorCase provokes one error on a fresh database and says how it must be classified.
type errorCase struct {
	name                           string
	provoke                        func(t *testing.T, db *gorm.DB) error
	retryable, unique, unavailable bool
}

func TestErrorClassificationOnRealServers(t *testing.T) {
	t.Parallel()
	cases := map[string][]errorCase{
		"postgres": {
			{name: "duplicate key 23505", provoke: duplicateKey, unique: true},
			{name: "deadlock 40P01", provoke: deadlock, retryable: true},
			{name: "lock not available 55P03", provoke: lockNowait, retryable: true},
			{name: "serialization failure 40001", provoke: serializationFailure, retryable: true},
			{name: "syntax error 42601", provoke: syntaxError},
			{name: "backend terminated 57P01", provoke: killedConnection, unavailable: true},
			{name: "connection refused", provoke: refused("postgres"), unavailable: true},
		},
		"mysql": {
			{name: "duplicate entry 1062", provoke: duplicateKey, unique: true},
			{name: "deadlock 1213", provoke: deadlock, retryable: true},
			{name: "lock wait timeout 1205", provoke: lockWaitTimeout, retryable: true},
			{name: "syntax error 1064", provoke: syntaxError},
			{name: "connection killed", provoke: killedConnection, unavailable: true},
			{name: "connection refused", provoke: refused("mysql"), unavailable: true},
		},
		"sqlite": {
			{name: "UNIQUE constraint failed", provoke: duplicateKey, unique: true},
			{name: "database is locked", provoke: sqliteLocked, retryable: true},
			{name: "syntax error", provoke: syntaxError},
		},
	}
	for _, name := range testdb.Dialects {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, c := range cases[name] {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					db := testdb.Open(t, name)
					d, err := For(db)
					if err != nil {
						t.Fatal(err)
					}
					err = c.provoke(t, db)
					if err == nil {
						t.Fatal("no error provoked")
					}
					err = fmt.Errorf("wrapped: %w", err) // as the library's callers see it
					if got := d.Retryable(err); got != c.retryable {
						t.Errorf("Retryable = %v, want %v (%v)", got, c.retryable, err)
					}
					if got := d.UniqueViolation(err); got != c.unique {
						t.Errorf("UniqueViolation = %v, want %v (%v)", got, c.unique, err)
					}
					if got := Unavailable(err); got != c.unavailable {
						t.Errorf("Unavailable = %v, want %v (%v)", got, c.unavailable, err)
					}
				})
			}
		})
	}
}

func mustExec(t *testing.T, db *gorm.DB, q string, args ...any) {
	t.Helper()
	if err := db.Exec(q, args...).Error; err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func rowsTable(t *testing.T, db *gorm.DB) {
	t.Helper()
	mustExec(t, db, "CREATE TABLE rows_t (id varchar(10) PRIMARY KEY, n int)")
	mustExec(t, db, "INSERT INTO rows_t (id, n) VALUES ('a', 0), ('b', 0)")
}

func duplicateKey(t *testing.T, db *gorm.DB) error {
	rowsTable(t, db)
	return db.Exec("INSERT INTO rows_t (id, n) VALUES ('a', 1)").Error
}

func syntaxError(_ *testing.T, db *gorm.DB) error {
	return db.Exec("SELEKT 1").Error
}

// deadlock runs two transactions that lock a and b in opposite orders; the server kills
// one of them.
func deadlock(t *testing.T, db *gorm.DB) error {
	rowsTable(t, db)
	var locked sync.WaitGroup
	locked.Add(2)
	errs := make([]error, 2)
	var done sync.WaitGroup
	for i, order := range [][2]string{{"a", "b"}, {"b", "a"}} {
		done.Add(1)
		go func() {
			defer done.Done()
			errs[i] = db.Transaction(func(tx *gorm.DB) error {
				if err := tx.Exec("UPDATE rows_t SET n = n + 1 WHERE id = ?", order[0]).Error; err != nil {
					locked.Done()
					return err
				}
				locked.Done()
				locked.Wait()
				return tx.Exec("UPDATE rows_t SET n = n + 1 WHERE id = ?", order[1]).Error
			})
		}()
	}
	done.Wait()
	return errors.Join(errs...)
}

func lockNowait(t *testing.T, db *gorm.DB) error {
	rowsTable(t, db)
	tx := db.Begin()
	defer tx.Rollback()
	mustExec(t, tx, "UPDATE rows_t SET n = 1 WHERE id = 'a'")
	return db.Exec("SELECT id FROM rows_t WHERE id = 'a' FOR UPDATE NOWAIT").Error
}

// serializationFailure: two SERIALIZABLE transactions each read what the other writes.
func serializationFailure(t *testing.T, db *gorm.DB) error {
	rowsTable(t, db)
	opts := &sql.TxOptions{Isolation: sql.LevelSerializable}
	t1, t2 := db.Begin(opts), db.Begin(opts)
	defer t1.Rollback()
	defer t2.Rollback()
	var n int
	for _, tx := range []*gorm.DB{t1, t2} {
		if err := tx.Raw("SELECT SUM(n) FROM rows_t").Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
	}
	mustExec(t, t1, "UPDATE rows_t SET n = 1 WHERE id = 'a'")
	mustExec(t, t2, "UPDATE rows_t SET n = 1 WHERE id = 'b'")
	if err := t1.Commit().Error; err != nil {
		return err
	}
	return t2.Commit().Error
}

func lockWaitTimeout(t *testing.T, db *gorm.DB) error {
	rowsTable(t, db)
	tx := db.Begin()
	defer tx.Rollback()
	mustExec(t, tx, "UPDATE rows_t SET n = 1 WHERE id = 'a'")
	return db.Connection(func(c *gorm.DB) error {
		mustExec(t, c, "SET SESSION innodb_lock_wait_timeout = 1")
		return c.Exec("UPDATE rows_t SET n = 2 WHERE id = 'a'").Error
	})
}

// killedConnection ends the server session under a pinned connection, then uses it.
func killedConnection(t *testing.T, db *gorm.DB) error {
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var id int64
	kill := "SELECT pg_terminate_backend(?)"
	q := "SELECT pg_backend_pid()"
	if db.Dialector.Name() == "mysql" {
		q, kill = "SELECT CONNECTION_ID()", "KILL ?"
	}
	if err := conn.QueryRowContext(ctx, q).Scan(&id); err != nil {
		t.Fatal(err)
	}
	mustExec(t, db, kill, id)
	testdb.Eventually(t, 5e9, func() bool {
		var alive int
		if db.Dialector.Name() == "mysql" {
			db.Raw("SELECT COUNT(*) FROM information_schema.processlist WHERE id = ?", id).Scan(&alive)
		} else {
			db.Raw("SELECT COUNT(*) FROM pg_stat_activity WHERE pid = ?", id).Scan(&alive)
		}
		return alive == 0
	}, "session %d still alive", id)
	_, err = conn.ExecContext(ctx, "SELECT 1")
	return err
}

// refused dials a port nothing listens on.
func refused(dialect string) func(t *testing.T, db *gorm.DB) error {
	return func(t *testing.T, _ *gorm.DB) error {
		var dial gorm.Dialector
		if dialect == "mysql" {
			dial = gormmysql.Open("root@tcp(127.0.0.1:1)/x")
		} else {
			dial = gormpostgres.Open("host=127.0.0.1 port=1 user=postgres dbname=x connect_timeout=5")
		}
		db, err := gorm.Open(dial, &gorm.Config{DisableAutomaticPing: true, Logger: logger.Discard})
		if err != nil {
			return err
		}
		return db.Exec("SELECT 1").Error
	}
}

// sqliteLocked writes while another connection holds the write lock, without a busy
// timeout.
func sqliteLocked(t *testing.T, db *gorm.DB) error {
	rowsTable(t, db)
	var file string
	if err := db.Raw("SELECT file FROM pragma_database_list WHERE name = 'main'").Scan(&file).Error; err != nil {
		t.Fatal(err)
	}
	tx := db.Begin()
	defer tx.Rollback()
	mustExec(t, tx, "UPDATE rows_t SET n = 1 WHERE id = 'a'")
	other, err := sql.Open("sqlite3", "file:"+file+"?_busy_timeout=0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	_, err = other.Exec("UPDATE rows_t SET n = 2 WHERE id = 'b'")
	return err
}

// TestMySQLErrorShape fails if go-sql-driver/mysql's error type no longer has the shape
// mysqlErrorNumber reads, or ErrInvalidConn another text.
func TestMySQLErrorShape(t *testing.T) {
	t.Parallel()
	typ := reflect.TypeFor[mysql.MySQLError]()
	if typ.PkgPath() != mysqlErrorPkg || typ.Name() != mysqlErrorType {
		t.Fatalf("mysql.MySQLError is %s.%s, want %s.%s", typ.PkgPath(), typ.Name(), mysqlErrorPkg, mysqlErrorType)
	}
	if f, ok := typ.FieldByName("Number"); !ok || f.Type.Kind() != reflect.Uint16 {
		t.Fatalf("mysql.MySQLError.Number: %v, %v", f.Type, ok)
	}
	err := fmt.Errorf("a: %w", errors.Join(errors.New("b"), fmt.Errorf("c: %w", &mysql.MySQLError{Number: 1213})))
	if n, ok := mysqlErrorNumber(err); !ok || n != 1213 {
		t.Errorf("mysqlErrorNumber = %d, %v; want 1213, true", n, ok)
	}
	if n, ok := mysqlErrorNumber(errors.New("Error 1213: deadlock")); ok {
		t.Errorf("mysqlErrorNumber of a plain error = %d, true", n)
	}
	if !mysqlInvalidConn(fmt.Errorf("x: %w", mysql.ErrInvalidConn)) {
		t.Error("ErrInvalidConn is not recognised: its text changed?")
	}
	if mysqlInvalidConn(fmt.Errorf("%w", errors.New("not an invalid connection"))) {
		t.Error("a different error recognised as ErrInvalidConn")
	}
	if !Unavailable(fmt.Errorf("x: %w", mysql.ErrInvalidConn)) {
		t.Error("Unavailable(ErrInvalidConn) = false")
	}
}

// TestPgErrorShape fails if pgconn.PgError no longer exposes SQLState().
func TestPgErrorShape(t *testing.T) {
	t.Parallel()
	err := fmt.Errorf("x: %w", &pgconn.PgError{Code: "40P01"})
	if got := sqlState(err); got != "40P01" {
		t.Fatalf("sqlState = %q, want 40P01", got)
	}
	if !strings.HasPrefix(reflect.TypeFor[pgconn.PgError]().PkgPath(), pgxPkgPrefix) {
		t.Fatalf("pgconn's path %q is not under %q", reflect.TypeFor[pgconn.PgError]().PkgPath(), pgxPkgPrefix)
	}
}
