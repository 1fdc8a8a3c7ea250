package asyncmonolith_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

// gauge counts the consumers inside Consume at once. Waiters block on a condition of the
// counts, or until their context ends, so a runtime that never lets the condition hold
// makes the test fail instead of hanging it.
type gauge struct {
	mu      sync.Mutex
	inside  int
	most    int // the largest inside ever observed
	entered int
	fills   int // how many times inside reached the fill level
	changed chan struct{}
}

func newGauge() *gauge { return &gauge{changed: make(chan struct{})} }

// enter records a consumer coming in; when its arrival makes inside reach fill (if fill
// is positive), the fill count goes up.
func (g *gauge) enter(fill int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inside++
	g.entered++
	g.most = max(g.most, g.inside)
	if fill > 0 && g.inside >= fill {
		g.fills++
	}
	g.broadcastLocked()
}

func (g *gauge) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inside--
	g.broadcastLocked()
}

func (g *gauge) broadcastLocked() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// wait blocks until cond holds (called with the lock held) or ctx ends; it reports whether cond held.
func (g *gauge) wait(ctx context.Context, cond func(g *gauge) bool) bool {
	for {
		g.mu.Lock()
		ok, ch := cond(g), g.changed
		g.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

func (g *gauge) snapshot() (most, entered int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.most, g.entered
}

// quiet discards the plugin's logs: these tests fail on purpose, and loudly.
func quiet(cfg am.Config) am.Config {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// drain processes the queue in the given mode until it is empty: "ProcessBatch" calls
// ProcessBatch until it claims nothing and nothing is pending; "Start" starts the plugin's
// processors and waits for the queue to empty.
func drain(t *testing.T, e *env, mode string) {
	t.Helper()
	switch mode {
	case "ProcessBatch":
		eventually(t, func() bool {
			if _, err := e.p.ProcessBatch(context.Background()); err != nil {
				t.Errorf("ProcessBatch: %v", err)
			}
			return e.pending(t) == 0
		}, "ProcessBatch emptied the queue")
	case "Start":
		e.start(t)
		eventually(t, func() bool { return e.pending(t) == 0 }, "the processors emptied the queue")
	default:
		t.Fatalf("unknown mode %q", mode)
	}
}

func produceJobs(t *testing.T, db *gorm.DB, n int) {
	t.Helper()
	jobs := make([]Job, n)
	for i := range jobs {
		jobs[i].N = i
	}
	if err := db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, jobs).Error }); err != nil {
		t.Fatal(err)
	}
}

// TestConsumersRunConcurrently: with ConsumerConcurrency = N, N messages whose consumer
// waits on a shared barrier (every one of them inside Consume before any returns) all get
// in at once.
func TestConsumersRunConcurrently(t *testing.T) {
	t.Parallel()
	const n = 16
	for _, mode := range []string{"ProcessBatch", "Start"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			eachDB(t, func(t *testing.T, dialect string) {
				e := setup(t, dialect, quiet(am.Config{ConsumerConcurrency: n}))
				g := newGauge()
				// A runtime that runs fewer than n at once never opens the barrier: the
				// guard lets the waiting consumer give up so the test fails instead of hanging.
				guard, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				defer cancel()
				if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
					g.enter(0)
					defer g.leave()
					ctx, stop := context.WithCancel(ctx)
					defer stop()
					go func() { <-guard.Done(); stop() }()
					g.wait(ctx, func(g *gauge) bool { return g.most >= n })
					return nil
				}), am.WithName("Barrier")); err != nil {
					t.Fatal(err)
				}
				produceJobs(t, e.db, n)
				drain(t, e, mode)
				if most, entered := g.snapshot(); most != n {
					t.Fatalf("at most %d of %d consumers were inside Consume at once (%d runs), want all %d (ConsumerConcurrency = %d)",
						most, n, entered, n, n)
				}
			})
		})
	}
}

// TestConsumerConcurrencyIsBounded: with ConsumerConcurrency = 4 and 20 waiting messages,
// exactly 4 consumers run at once, never more. The first consumers wait until 4 are inside
// together, so the bound must be reached (a runtime that ignored it would let the other 16
// in while they wait); later ones return at once, because when a processor refills freed
// slots is its own policy (it may wait for several to free).
func TestConsumerConcurrencyIsBounded(t *testing.T) {
	t.Parallel()
	const limit, total = 4, 20
	for _, mode := range []string{"ProcessBatch", "Start"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			eachDB(t, func(t *testing.T, dialect string) {
				e := setup(t, dialect, quiet(am.Config{ConsumerConcurrency: limit}))
				g := newGauge()
				guard, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				defer cancel()
				if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
					g.enter(limit)
					defer g.leave()
					ctx, stop := context.WithCancel(ctx)
					defer stop()
					go func() { <-guard.Done(); stop() }()
					g.wait(ctx, func(g *gauge) bool { return g.fills > 0 })
					return nil
				}), am.WithName("Bounded")); err != nil {
					t.Fatal(err)
				}
				produceJobs(t, e.db, total)
				drain(t, e, mode)
				most, entered := g.snapshot()
				if most != limit {
					t.Fatalf("at most %d consumers were inside Consume at once (%d runs), want exactly %d (ConsumerConcurrency)", most, entered, limit)
				}
				if entered != total {
					t.Fatalf("%d runs, want %d", entered, total)
				}
			})
		})
	}
}
