package asyncmonolith_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"gorm.io/gorm"
)

func TestConfigValidationNamesTheField(t *testing.T) {
	t.Parallel()
	cases := []struct {
		field string
		cfg   am.Config
	}{
		{"MaxAttempts", am.Config{MaxAttempts: -1}},
		{"AttemptDelay", am.Config{AttemptDelay: -time.Second}},
		{"ProcessorMinDelay", am.Config{ProcessorMinDelay: 2 * time.Second, ProcessorMaxDelay: time.Second}},
		{"ProcessorMaxDelay", am.Config{ProcessorMaxDelay: -1}},
		{"ProcessorBatchSize", am.Config{ProcessorBatchSize: 10_001}},
		{"ConsumerProcessors", am.Config{ConsumerProcessors: -2}},
		{"ConsumerTimeout", am.Config{ConsumerTimeout: 2 * time.Hour}},
		{"AbandonGrace", am.Config{AbandonGrace: -1}},
		{"BreakerFailures", am.Config{BreakerFailures: -1}},
		{"BreakerCooldown", am.Config{BreakerCooldown: -time.Second}},
		{"BreakerMaxCooldown", am.Config{BreakerCooldown: time.Hour, BreakerMaxCooldown: time.Minute}},
	}
	for _, c := range cases {
		db := testdb.Open(t, "sqlite")
		err := db.Use(am.New(c.cfg))
		var ce *am.ConfigError
		if !errors.Is(err, am.ErrInvalidConfig) || !errors.As(err, &ce) || ce.Field != c.field {
			t.Errorf("%s: err = %v, want a ConfigError naming %s", c.field, err, c.field)
		}
	}
}

func TestSQLiteRefusesConcurrentProcessors(t *testing.T) {
	t.Parallel()
	e := setup(t, "sqlite", am.Config{ConsumerProcessors: 2})
	err := e.p.Start(context.Background())
	if !errors.Is(err, am.ErrConcurrencyUnsupported) || !strings.Contains(err.Error(), "ConsumerProcessors") {
		t.Fatalf("err = %v, want ErrConcurrencyUnsupported naming ConsumerProcessors", err)
	}
	if err := e.p.Stop(context.Background()); !errors.Is(err, am.ErrNotStarted) {
		t.Fatalf("something was started: Stop = %v", err)
	}
}

func TestStartStopErrors(t *testing.T) {
	t.Parallel()
	if err := am.New(am.Config{}).Start(context.Background()); !errors.Is(err, am.ErrNotRegistered) {
		t.Fatalf("Start before db.Use: %v", err)
	}
	e := setup(t, "sqlite", am.Config{})
	e.start(t)
	if err := e.p.Start(context.Background()); !errors.Is(err, am.ErrAlreadyStarted) {
		t.Fatalf("second Start: %v", err)
	}
}

// Blocker blocks until released, recording runs.
type Blocker struct {
	started chan string
	release chan struct{}
	runs    *atomic.Int64
}

func (b Blocker) Consume(ctx context.Context, m *am.Message[Job]) error {
	b.runs.Add(1)
	b.started <- m.ID
	select {
	case <-b.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestGracefulStopWaitsForRunningConsumer(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		b := Blocker{started: make(chan string, 1), release: make(chan struct{}), runs: &atomic.Int64{}}
		if err := am.Register[Job](e.p, b); err != nil {
			t.Fatal(err)
		}
		if err := am.ProduceNow(context.Background(), e.db, Job{}); err != nil {
			t.Fatal(err)
		}
		if err := e.p.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		<-b.started
		stopped := make(chan error, 1)
		go func() { stopped <- e.p.Stop(context.Background()) }()
		select {
		case err := <-stopped:
			t.Fatalf("Stop returned (%v) while a consumer was running", err)
		case <-time.After(100 * time.Millisecond):
		}
		close(b.release)
		if err := <-stopped; err != nil {
			t.Fatal(err)
		}
		if e.pending(t) != 0 {
			t.Fatal("the message that finished during Stop was not completed")
		}
	})
}

func TestHardStopAndCrashLeaveMessagesForAnotherInstance(t *testing.T) {
	t.Parallel()
	for _, dialect := range []string{"postgres", "mysql"} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			e := setup(t, dialect, am.Config{})
			b := Blocker{started: make(chan string, 100), release: make(chan struct{}), runs: &atomic.Int64{}}
			if err := am.Register[Job](e.p, b); err != nil {
				t.Fatal(err)
			}
			if err := e.db.Transaction(func(tx *gorm.DB) error {
				return am.ProduceBatch(tx, []Job{{1}, {2}, {3}}).Error
			}); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			if err := e.p.Start(ctx); err != nil {
				t.Fatal(err)
			}
			<-b.started
			// A second app instance sees the batch locked...
			// Instances share a clock: a lease is read by the clock of whoever claims next.
			other := instance(t, e.db, dialect, am.Config{Clock: e.clock})
			done := &atomic.Int64{}
			if err := am.Register[Job](other, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
				done.Add(1)
				return nil
			}), am.WithName("Blocker")); err != nil {
				t.Fatal(err)
			}
			if n, err := other.ProcessBatch(context.Background()); err != nil || n != 0 {
				t.Fatalf("another instance fetched %d locked messages (err %v)", n, err)
			}
			// ...until the first one dies (its Start context is cancelled: a hard stop).
			cancel()
			stopCtx, stopCancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer stopCancel()
			_ = e.p.Stop(stopCtx)
			eventually(t, func() bool {
				_, _ = other.ProcessBatch(context.Background())
				return done.Load() == 3
			}, "the other instance consumed the abandoned batch")
			var attempts []int
			e.db.Model(&am.PoisonedMessage{}).Pluck("attempts", &attempts)
			if e.pending(t) != 0 || len(attempts) != 0 {
				t.Fatalf("pending %d, poisoned %v", e.pending(t), attempts)
			}
		})
	}
}

// instance registers a second plugin (another "app instance") on a new connection pool
// to the same database.
func instance(t *testing.T, db *gorm.DB, dialect string, cfg am.Config) *am.Plugin {
	t.Helper()
	other, err := gorm.Open(db.Dialector, &gorm.Config{Logger: db.Logger})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := other.DB()
	t.Cleanup(func() { sqlDB.Close() })
	if cfg.ProcessorMaxDelay == 0 {
		cfg.ProcessorMaxDelay = 50 * time.Millisecond
	}
	p := am.New(cfg)
	if err := other.Use(p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTwoInstancesConsumeEachMessageOnce(t *testing.T) {
	t.Parallel()
	const total = 10_000
	for _, dialect := range []string{"postgres", "mysql"} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			e := setup(t, dialect, am.Config{ConsumerProcessors: 2, ProcessorMinDelay: time.Millisecond})
			var mu sync.Mutex
			seen := map[int]int{}
			consume := am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
				mu.Lock()
				seen[m.Payload.N]++
				mu.Unlock()
				return nil
			})
			other := instance(t, e.db, dialect, am.Config{ConsumerProcessors: 2, ProcessorMinDelay: time.Millisecond, Clock: e.clock})
			for _, p := range []*am.Plugin{e.p, other} {
				if err := am.Register[Job](p, consume, am.WithName("Counter")); err != nil {
					t.Fatal(err)
				}
			}
			jobs := make([]Job, total)
			for i := range jobs {
				jobs[i] = Job{N: i}
			}
			if err := e.db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, jobs).Error }); err != nil {
				t.Fatal(err)
			}
			e.start(t)
			if err := other.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = other.Stop(context.Background()) })
			testdb.Eventually(t, 2*time.Minute, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(seen) == total
			}, "all %d messages consumed", total)
			eventually(t, func() bool { return e.pending(t) == 0 }, "queue drained")
			mu.Lock()
			defer mu.Unlock()
			for n, c := range seen {
				if c != 1 {
					t.Fatalf("message %d consumed %d times", n, c)
				}
			}
		})
	}
}

func TestCommitWakesProcessorsBeforeThePollInterval(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{ProcessorMaxDelay: time.Hour, ProcessorMinDelay: time.Millisecond})
		a, _ := registerBoth(t, e)
		e.start(t)
		// Buffered on a session, flushed by the Create's own transaction.
		if err := am.Produce(e.db, OrderCancelled{OrderID: "1"}).Create(&Order{ID: "1"}).Error; err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool { return a.count() == 1 }, "consumed without waiting an hour")
		// Produced inside the caller's transaction: the wake comes before the commit.
		if err := e.db.Transaction(func(tx *gorm.DB) error {
			return am.Produce(tx, OrderCancelled{OrderID: "2"}).Error
		}); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool { return a.count() == 2 }, "consumed without waiting an hour")
	})
}

func TestUnflushedMessagesAreReported(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	db := testdb.Open(t, "sqlite")
	p := am.New(am.Config{Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	if err := am.Register[OrderCancelled](p, EmailSender{&recorder[OrderCancelled]{}}); err != nil {
		t.Fatal(err)
	}
	func() {
		s := am.Produce(db, OrderCancelled{OrderID: "lost"})
		if am.Pending(s) != 1 {
			t.Fatal("not buffered")
		}
	}()
	testdb.Eventually(t, 10*time.Second, func() bool {
		runtime.GC()
		return strings.Contains(buf.String(), "never written")
	}, "a dropped buffer is logged")
	if !strings.Contains(buf.String(), "OrderCancelled") || !strings.Contains(buf.String(), "count=1") {
		t.Fatalf("log = %s", buf.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var _ = fmt.Sprint

func TestProcessorHoldingLocksDoesNotBlockProducers(t *testing.T) {
	t.Parallel()
	for _, dialect := range []string{"postgres", "mysql"} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			e := setup(t, dialect, am.Config{})
			b := Blocker{started: make(chan string, 10), release: make(chan struct{}), runs: &atomic.Int64{}}
			if err := am.Register[Job](e.p, b); err != nil {
				t.Fatal(err)
			}
			if err := am.ProduceNow(context.Background(), e.db, Job{N: 1}); err != nil {
				t.Fatal(err)
			}
			e.start(t)
			<-b.started // the processor now holds the row lock of the only (near-empty queue) message
			defer close(b.release)
			// Under InnoDB's REPEATABLE READ the locking read would take a next-key lock on the
			// supremum and block this insert for innodb_lock_wait_timeout (50 s).
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for i := range 5 {
				if err := am.ProduceNow(ctx, e.db, Job{N: 10 + i}, am.Delay(time.Hour)); err != nil {
					t.Fatalf("producer blocked by the processor: %v", err)
				}
			}
		})
	}
}

func TestOtherInstanceCommitWakesProcessorsOnPostgres(t *testing.T) {
	t.Parallel()
	e := setup(t, "postgres", am.Config{ProcessorMaxDelay: time.Hour, ProcessorMinDelay: time.Millisecond})
	a, _ := registerBoth(t, e)
	// The producer is another app instance: its own pool, its own plugin, no processors.
	producer := instance(t, e.db, "postgres", am.Config{Clock: e.clock})
	registerBoth(t, &env{db: e.db, p: producer})
	// A first message makes the processor's first poll observable: once it is consumed,
	// the processor sleeps for an hour unless something wakes it.
	if err := am.ProduceNow(context.Background(), e.db, OrderCancelled{OrderID: "warm-up"}); err != nil {
		t.Fatal(err)
	}
	e.start(t)
	eventually(t, func() bool { return a.count() == 1 }, "the first poll consumed the warm-up message")
	var schema string
	e.db.Raw("SELECT current_schema()").Scan(&schema)
	eventually(t, func() bool {
		var n int64
		e.db.Raw(`SELECT COUNT(*) FROM pg_stat_activity WHERE query = ?`, `LISTEN "asyncmonolith:`+schema+`"`).Scan(&n)
		return n == 1
	}, "the listener subscribed")
	if err := am.ProduceNow(context.Background(), producerDB(t, producer), OrderCancelled{OrderID: "x"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return a.count() == 2 }, "a commit in another instance woke the processors (they poll hourly)")
}

// producerDB returns the *gorm.DB a plugin was registered on.
func producerDB(t *testing.T, p *am.Plugin) *gorm.DB {
	t.Helper()
	db, err := p.DB()
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestOtherInstanceCommitWakesProcessorsOnSQLite(t *testing.T) {
	t.Parallel()
	e := setup(t, "sqlite", am.Config{ProcessorMaxDelay: time.Hour, ProcessorMinDelay: time.Millisecond})
	a, _ := registerBoth(t, e)
	producer := instance(t, e.db, "sqlite", am.Config{Clock: e.clock})
	registerBoth(t, &env{db: e.db, p: producer})
	if err := am.ProduceNow(context.Background(), e.db, OrderCancelled{OrderID: "warm-up"}); err != nil {
		t.Fatal(err)
	}
	e.start(t)
	eventually(t, func() bool { return a.count() == 1 }, "the first poll consumed the warm-up message")
	// The watcher reads data_version every few milliseconds; the processors poll hourly.
	if err := am.ProduceNow(context.Background(), producerDB(t, producer), OrderCancelled{OrderID: "x"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return a.count() == 2 }, "a commit through another connection pool woke the processors")
}
