package dialect

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"gorm.io/gorm"
)

// TestPgxConnectionShape fails if the pgx this module requires no longer has the methods
// LISTEN reaches through reflection (pgx.go): LISTEN must then fail loudly, never fall
// back to polling unnoticed.
func TestPgxConnectionShape(t *testing.T) {
	t.Parallel()
	db := testdb.Open(t, "postgres")
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
	err = conn.Raw(func(dc any) error {
		pc, err := pgxConnOf(dc)
		if err != nil {
			return err
		}
		if err := pc.exec(ctx, "LISTEN "+quoteIdent(`shape "test"`)); err != nil {
			return err
		}
		if err := pc.exec(ctx, "SELEKT"); err == nil || sqlState(err) != "42601" {
			return errors.New("exec of a bad statement did not return pgx's error")
		}
		short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		if err := pc.waitForNotification(short); !errors.Is(err, context.DeadlineExceeded) {
			return errors.New("waitForNotification did not wait for its context")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Another driver's connection means "no LISTEN here" (poll), not a failure.
	lite, err := testdb.Open(t, "sqlite").DB()
	if err != nil {
		t.Fatal(err)
	}
	lc, err := lite.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	if err := lc.Raw(func(dc any) error { _, err := pgxConnOf(dc); return err }); !errors.Is(err, ErrNoListen) {
		t.Fatalf("pgxConnOf(a SQLite connection) = %v, want ErrNoListen", err)
	}
}

// TestPostgresListen hears a notification on the pool (Listen) and on a connection of its
// own (ListenDirect).
func TestPostgresListen(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.OpenDSN(t, "postgres")
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	d := postgres{}
	for _, direct := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		var wakes atomic.Int64
		done := make(chan error, 1)
		go func() {
			if direct {
				done <- d.ListenDirect(ctx, sqlDB, dsn, func() { wakes.Add(1) })
			} else {
				done <- d.Listen(ctx, sqlDB, func() { wakes.Add(1) })
			}
		}()
		testdb.Eventually(t, 10*time.Second, func() bool { return wakes.Load() >= 1 }, "no first wake (direct %v)", direct)
		testdb.Eventually(t, 10*time.Second, func() bool {
			notify(t, db)
			return wakes.Load() >= 2
		}, "notification not heard (direct %v)", direct)
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Listen (direct %v) ended with %v, want context.Canceled", direct, err)
		}
	}
}

func notify(t *testing.T, db *gorm.DB) {
	t.Helper()
	if err := db.Exec("SELECT pg_notify('asyncmonolith:' || current_schema(), '')").Error; err != nil {
		t.Fatal(err)
	}
}

func TestPostgresCheckListenDSN(t *testing.T) {
	t.Parallel()
	d := postgres{}
	// A server that counts the connections it is offered: parsing must dial nothing.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var dialled atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dialled.Add(1)
			c.Close()
		}
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	for _, dsn := range []string{
		"host=127.0.0.1 port=" + port + " user=postgres dbname=test",
		"postgres://postgres@127.0.0.1:" + port + "/test",
	} {
		if err := d.CheckListenDSN(dsn); err != nil {
			t.Errorf("CheckListenDSN(%q) = %v", dsn, err)
		}
	}
	// One real dial through the same listener shows that a dial would have been counted.
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
	}
	testdb.Eventually(t, 10*time.Second, func() bool { return dialled.Load() >= 1 }, "the control dial was not counted")
	if n := dialled.Load(); n != 1 {
		t.Errorf("CheckListenDSN dialled the server (%d connections besides the control)", n-1)
	}
	for _, dsn := range []string{"host=127.0.0.1 port=notaport password=secret", "postgres://u:secret@[::1/x"} {
		err := d.CheckListenDSN(dsn)
		if err == nil {
			t.Errorf("CheckListenDSN(%q) = nil", dsn)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("CheckListenDSN's error shows the DSN: %v", err)
		}
	}
}
