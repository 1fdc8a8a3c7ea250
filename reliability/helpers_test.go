package reliability_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Work is the payload of the fault tests.
type Work struct {
	N int `json:"n"`
}

// Consumption is written through Message.Tx by the consumer: one row per completed message,
// so it commits with the message's deletion (exactly-once for database effects).
type Consumption struct {
	ID uint `gorm:"primaryKey"`
	N  int  `gorm:"index"`
}

func scale(n int) int {
	if s, err := strconv.Atoi(os.Getenv("AM_RELIABILITY_SCALE")); err == nil && s > 0 {
		return n * s
	}
	return n
}

// fresh opens a fresh database and returns its DSN and a handle.
func fresh(t *testing.T, dialect string) (string, *gorm.DB) {
	t.Helper()
	return testdb.OpenDSN(t, dialect)
}

func open(dialect, dsn string) (*gorm.DB, error) {
	cfg := &gorm.Config{Logger: logger.Discard}
	switch dialect {
	case "postgres":
		return gorm.Open(postgres.Open(dsn), cfg)
	case "mysql":
		return gorm.Open(mysql.Open(dsn), cfg)
	}
	return gorm.Open(sqlite.Open(dsn), cfg)
}

// worker registers the plugin and a consumer that records each completion through
// Message.Tx (and, when side is not nil, a side effect outside the database first).
func worker(db *gorm.DB, cfg am.Config, side func(n int)) (*am.Plugin, error) {
	p := am.New(cfg)
	if err := db.Use(p); err != nil {
		return nil, err
	}
	err := am.Register[Work](p, am.ConsumerFunc[Work](func(ctx context.Context, m *am.Message[Work]) error {
		if side != nil {
			side(m.Payload.N)
		}
		return m.Tx.Create(&Consumption{N: m.Payload.N}).Error
	}), am.WithName("Recorder"))
	return p, err
}

// migratedWorker is worker without side effects, with the plugin's tables and
// Consumption migrated.
func migratedWorker(t *testing.T, db *gorm.DB, cfg am.Config) *am.Plugin {
	t.Helper()
	p, err := worker(db, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	if err := db.AutoMigrate(&Consumption{}); err != nil {
		t.Fatal(err)
	}
	return p
}

// produce writes n Work messages numbered 0..n-1.
func produce(t *testing.T, db *gorm.DB, p *am.Plugin, n int) {
	t.Helper()
	batch := make([]Work, 0, 1000)
	for i := 0; i < n; i++ {
		batch = append(batch, Work{N: i})
		if len(batch) == cap(batch) || i == n-1 {
			if err := db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, batch).Error }); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

// account checks that every message 0..n-1 was consumed exactly once in the database (or
// poisoned), none lost, and the queue is empty.
func account(t *testing.T, db *gorm.DB, n int) (consumed, poisoned int64) {
	t.Helper()
	var dup []struct {
		N int
		C int
	}
	db.Model(&Consumption{}).Select("n, COUNT(*) AS c").Group("n").Having("COUNT(*) > 1").Scan(&dup)
	if len(dup) > 0 {
		t.Fatalf("database effects duplicated for %d messages, e.g. %+v", len(dup), dup[0])
	}
	db.Model(&Consumption{}).Count(&consumed)
	db.Model(&am.PoisonedMessage{}).Count(&poisoned)
	var pending int64
	db.Model(&am.ConsumerMessage{}).Count(&pending)
	if pending != 0 {
		t.Fatalf("%d messages still pending", pending)
	}
	if lost := int64(n) - consumed - poisoned; lost != 0 {
		t.Fatalf("lost %d messages (consumed %d, poisoned %d of %d)", lost, consumed, poisoned, n)
	}
	return consumed, poisoned
}

func waitDrained(t *testing.T, db *gorm.DB, timeout time.Duration) {
	t.Helper()
	testdb.Eventually(t, timeout, func() bool {
		var pending int64
		db.Model(&am.ConsumerMessage{}).Count(&pending)
		return pending == 0
	}, "queue drained")
}

var _ = fmt.Sprint
