package asyncmonolith_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/asyncmonolithtest"
	"github.com/asyncmonolith/asyncmonolith/internal/dialect"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"gorm.io/gorm"
)

// clock is the public test clock: the library's tests use what its users use.
type clock = asyncmonolithtest.Clock

func newClock() *clock {
	return asyncmonolithtest.NewClock(time.Date(2026, 1, 5, 12, 0, 0, 0, time.UTC))
}

// readHook is a clock whose Now runs a hook first (its timers are the clock's).
type readHook struct {
	*clock
	now func() time.Time
}

func (h readHook) Now() time.Time { return h.now() }

// eachDB runs fn as a parallel subtest on every database.
func eachDB(t *testing.T, fn func(t *testing.T, dialect string)) {
	t.Helper()
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			fn(t, d)
		})
	}
}

// caps is what the database called name can do, as its dialect reports it (RowLocks,
// TextStorable, PreparesInserts, …): tests select databases by capability, not by name.
func caps(name string) dialect.Dialect {
	d, err := dialect.ForName(name)
	if err != nil {
		panic(err) // names come from testdb.Dialects
	}
	return d
}

// env is one test's database with the plugin registered and migrated.
type env struct {
	db    *gorm.DB
	p     *am.Plugin
	clock *clock
}

func setup(t *testing.T, dialect string, cfg am.Config, opts ...testdb.Options) *env {
	t.Helper()
	return setupOn(t, testdb.Open(t, dialect, opts...), cfg)
}

// setupOn is setup on a database the test opened itself.
func setupOn(t *testing.T, db *gorm.DB, cfg am.Config) *env {
	t.Helper()
	c := newClock()
	switch given := cfg.Clock.(type) {
	case nil:
		cfg.Clock = c
	case *clock:
		c = given
	case readHook:
		c = given.clock
	}
	if cfg.ProcessorMaxDelay == 0 {
		cfg.ProcessorMaxDelay = 50 * time.Millisecond
	}
	p := am.New(cfg)
	if err := db.Use(p); err != nil {
		t.Fatalf("db.Use: %v", err)
	}
	if err := p.Migrate(context.Background(), db); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return &env{db: db, p: p, clock: c}
}

func (e *env) start(t *testing.T) {
	t.Helper()
	if err := e.p.Start(context.Background()); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = e.p.Stop(ctx)
	})
}

func (e *env) count(t *testing.T, model any, where ...any) int64 {
	t.Helper()
	var n int64
	q := e.db.Model(model)
	if len(where) > 0 {
		q = q.Where(where[0], where[1:]...)
	}
	if err := q.Count(&n).Error; err != nil {
		t.Fatalf("count: %v", err)
	}
	return n
}

func (e *env) pending(t *testing.T) int64 { return e.count(t, &am.ConsumerMessage{}) }

// recorder is a consumer that records what it saw.
type recorder[T any] struct {
	mu   sync.Mutex
	seen []*am.Message[T]
	fn   func(ctx context.Context, m *am.Message[T]) error
}

func (r *recorder[T]) Consume(ctx context.Context, m *am.Message[T]) error {
	r.mu.Lock()
	r.seen = append(r.seen, m)
	r.mu.Unlock()
	if r.fn != nil {
		return r.fn(ctx, m)
	}
	return nil
}

func (r *recorder[T]) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

func (r *recorder[T]) messages() []*am.Message[T] {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*am.Message[T](nil), r.seen...)
}

func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	testdb.Eventually(t, 20*time.Second, cond, "%s", what)
}

func newTextLogger(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
