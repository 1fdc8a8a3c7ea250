package asyncmonolith_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

const oneDBError = "create one Plugin per database"

// openCopy opens another SQLite file with a copy of db's gorm.Config, as dbresolver opens
// its sources and replicas: GORM initializes every plugin of the copied Plugins map on it.
func openCopy(t *testing.T, db *gorm.DB) (*gorm.DB, error) {
	t.Helper()
	cfg := *db.Config
	other, err := gorm.Open(sqlite.Open(testdb.SQLiteDSN(filepath.Join(t.TempDir(), "replica.db"))), &cfg)
	closeLater(t, other)
	return other, err
}

// closeLater closes db's pool when the test ends (db may be nil: a failed gorm.Open).
func closeLater(t *testing.T, db *gorm.DB) {
	if db == nil {
		return
	}
	if s, err := db.DB(); err == nil {
		t.Cleanup(func() { s.Close() })
	}
}

func TestInitializeOnCopiedConfigKeepsTheFirstDB(t *testing.T) {
	t.Parallel()
	e := setup(t, "sqlite", am.Config{})
	r := &recorder[Job]{}
	if err := am.Register[Job](e.p, Flaky{r}); err != nil {
		t.Fatal(err)
	}
	if _, err := openCopy(t, e.db); err != nil {
		t.Fatalf("gorm.Open on a copy of the registered config: %v", err)
	}
	bound, err := e.p.DB()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := e.db.DB()
	if got, _ := bound.DB(); got != want {
		t.Fatal("the plugin was re-bound to the database opened from the copied config")
	}
	// The plugin still works on the first database.
	ctx := context.Background()
	if err := am.ProduceNow(ctx, e.db, Job{N: 1}); err != nil {
		t.Fatal(err)
	}
	if n, err := e.p.ProcessBatch(ctx); err != nil || n != 1 || r.count() != 1 {
		t.Fatalf("ProcessBatch = %d, %v; consumed %d, want 1", n, err, r.count())
	}
}

// The guard against one Plugin on two databases still fires, however the second is given.
func TestInitializeOnAnotherDBFails(t *testing.T) {
	t.Parallel()
	quiet := func() *gorm.Config { return &gorm.Config{Logger: logger.Discard} }
	t.Run("Use", func(t *testing.T) {
		t.Parallel()
		p := am.New(am.Config{})
		if err := testdb.Open(t, "sqlite").Use(p); err != nil {
			t.Fatal(err)
		}
		err := testdb.Open(t, "sqlite").Use(p)
		if !errors.Is(err, am.ErrAlreadyInitialized) || !strings.Contains(err.Error(), oneDBError) {
			t.Fatalf("second db.Use = %v, want %q", err, oneDBError)
		}
	})
	t.Run("Config.Plugins", func(t *testing.T) {
		t.Parallel()
		p := am.New(am.Config{})
		if err := testdb.Open(t, "sqlite").Use(p); err != nil {
			t.Fatal(err)
		}
		cfg := quiet()
		cfg.Plugins = map[string]gorm.Plugin{am.Name: p}
		db, err := gorm.Open(sqlite.Open(testdb.SQLiteDSN(filepath.Join(t.TempDir(), "b.db"))), cfg)
		closeLater(t, db)
		if !errors.Is(err, am.ErrAlreadyInitialized) || !strings.Contains(err.Error(), oneDBError) {
			t.Fatalf("gorm.Open with the plugin in a new Plugins map = %v, want %q", err, oneDBError)
		}
	})
	t.Run("same *gorm.Config opened again", func(t *testing.T) {
		t.Parallel()
		// gorm.Open on the very same *gorm.Config re-points the first *gorm.DB at the new
		// connection (ConnPool is a Config field): that is a second database, not a copy.
		cfg := quiet()
		first, err := gorm.Open(sqlite.Open(testdb.SQLiteDSN(filepath.Join(t.TempDir(), "a.db"))), cfg)
		if err != nil {
			t.Fatal(err)
		}
		closeLater(t, first)
		p := am.New(am.Config{})
		if err := first.Use(p); err != nil {
			t.Fatal(err)
		}
		second, err := gorm.Open(sqlite.Open(testdb.SQLiteDSN(filepath.Join(t.TempDir(), "b.db"))), cfg)
		closeLater(t, second)
		if !errors.Is(err, am.ErrAlreadyInitialized) || !strings.Contains(err.Error(), oneDBError) {
			t.Fatalf("gorm.Open on the same *gorm.Config = %v, want %q", err, oneDBError)
		}
	})
}

// A *gorm.DB opened with a copy of the registered config is accepted (dbresolver opens
// its connections that way) but it is not the plugin's database: producing on it must fail
// loudly, not write to a database the processors never read, nor buffer messages that no
// callback of its own ever flushes.
func TestProduceOnCopiedConfigDBFails(t *testing.T) {
	t.Parallel()
	e := setup(t, "sqlite", am.Config{})
	r := &recorder[Job]{}
	if err := am.Register[Job](e.p, Flaky{r}); err != nil {
		t.Fatal(err)
	}
	other, err := openCopy(t, e.db)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.AutoMigrate(&Order{}, &am.ConsumerMessage{}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Buffered on a session of the other database, then its write.
	err = am.Produce(other, Job{N: 1}).Create(&Order{ID: "o1"}).Error
	if !errors.Is(err, am.ErrNotRegistered) {
		t.Errorf("Produce on a *gorm.DB opened from a copied config, then Create: %v; want ErrNotRegistered", err)
	}
	// In a transaction of the other database.
	err = other.Transaction(func(tx *gorm.DB) error { return am.ProduceTx(t.Context(), tx, Job{N: 2}) })
	if !errors.Is(err, am.ErrNotRegistered) {
		t.Errorf("ProduceTx on a transaction of that database: %v; want ErrNotRegistered", err)
	}
	if err := am.ProduceNow(ctx, other, Job{N: 3}); !errors.Is(err, am.ErrNotRegistered) {
		t.Errorf("ProduceNow on that database: %v; want ErrNotRegistered", err)
	}
	var stray int64
	other.Model(&am.ConsumerMessage{}).Count(&stray)
	if stray != 0 {
		t.Errorf("%d messages written to the database the processors never read", stray)
	}
	// Sessions, contexts and transactions of the registered database still produce.
	s := e.db.Session(&gorm.Session{SkipDefaultTransaction: true, CreateBatchSize: 10}).WithContext(ctx).Debug()
	if err := am.ProduceNow(ctx, s, Job{N: 4}); err != nil {
		t.Fatalf("ProduceNow on a session (its own Config copy) of the registered database: %v", err)
	}
	if err := e.db.Transaction(func(tx *gorm.DB) error { return am.ProduceTx(t.Context(), tx, Job{N: 5}) }); err != nil {
		t.Fatal(err)
	}
	if n := e.pending(t); n != 2 {
		t.Fatalf("%d messages pending on the registered database, want 2", n)
	}
}
