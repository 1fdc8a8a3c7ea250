package asyncmonolith

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"gorm.io/gorm"
)

type lifeJob struct{ N int }

// internalPlugin opens a test database of dialect with a plugin of cfg registered and its
// tables migrated, for this package's internal tests.
func internalPlugin(t *testing.T, dialect string, cfg Config) (*gorm.DB, *Plugin) {
	t.Helper()
	db := testdb.Open(t, dialect)
	p := New(cfg)
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	if err := p.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return db, p
}

// waitFor waits on a condition (not on a duration): it fails the test after a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting until %s", what)
		case <-tick.C:
		}
	}
}

// Start while Stop waits for a running consumer does not start a second set of processors
// beside the stopping ones: it waits for them, then starts. On SQLite two sets would be two
// processors on a database without row locks.
func TestStartDuringStopWaitsForTheStoppingProcessors(t *testing.T) {
	t.Parallel()
	db, p := internalPlugin(t, "sqlite", Config{ProcessorMaxDelay: 20 * time.Millisecond})
	running, release := make(chan struct{}), make(chan struct{})
	var runs atomic.Int32
	if err := Register[lifeJob](p, ConsumerFunc[lifeJob](func(ctx context.Context, m *Message[lifeJob]) error {
		if runs.Add(1) == 1 {
			close(running)
			<-release
		}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := ProduceNow(context.Background(), db, lifeJob{1}); err != nil {
		t.Fatal(err)
	}
	<-running
	p.mu.Lock()
	first := p.run
	p.mu.Unlock()
	stopped := make(chan error, 1)
	go func() { stopped <- p.Stop(context.Background()) }()
	waitFor(t, "Stop has begun", func() bool { p.mu.Lock(); defer p.mu.Unlock(); return first.stopping })
	if err := p.Stop(context.Background()); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("a second Stop during Stop = %v, want ErrNotStarted", err)
	}
	started := make(chan error, 1)
	go func() { started <- p.Start(context.Background()) }()
	waitFor(t, "Start waits for the stopping processors", func() bool { return p.startsWaiting.Load() == 1 })
	p.mu.Lock()
	still := p.run == first
	p.mu.Unlock()
	if !still {
		t.Fatal("Start during Stop replaced the stopping run: a second set of processors started beside it")
	}
	select {
	case err := <-started:
		t.Fatalf("Start returned (%v) while the last processors were still stopping", err)
	default:
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := <-started; err != nil {
		t.Fatalf("Start after Stop: %v", err)
	}
	// The new processors run: a new message is consumed.
	if err := ProduceNow(context.Background(), db, lifeJob{2}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new processors consume", func() bool { return runs.Load() == 2 })
	if err := p.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// After the context given to Start is cancelled (a hard stop), Start works again without a
// Stop: it waits for the last processors and starts new ones.
func TestStartAfterCancelledStartContextWithoutStop(t *testing.T) {
	t.Parallel()
	db, p := internalPlugin(t, "sqlite", Config{ProcessorMaxDelay: 20 * time.Millisecond})
	var runs atomic.Int32
	if err := Register[lifeJob](p, ConsumerFunc[lifeJob](func(ctx context.Context, m *Message[lifeJob]) error {
		runs.Add(1)
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := p.Start(context.Background()); err != nil {
		t.Fatalf("Start after the last Start's context was cancelled: %v", err)
	}
	if err := p.Start(context.Background()); !errors.Is(err, ErrAlreadyStarted) {
		t.Fatalf("a second Start = %v, want ErrAlreadyStarted", err)
	}
	if err := ProduceNow(context.Background(), db, lifeJob{1}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the restarted processors consume", func() bool { return runs.Load() == 1 })
	if err := p.Stop(context.Background()); err != nil {
		t.Fatalf("Stop after the restart: %v", err)
	}
}

// The plugin's configuration is fixed by New: the caller's map changed afterwards changes
// nothing, and methods that need the engine answer ErrNotRegistered (not a nil pointer)
// until Initialize has published it.
func TestConfigIsFixedByNew(t *testing.T) {
	t.Parallel()
	rails := map[string]RailConfig{"slow": {}}
	p := New(Config{Rails: rails})
	rails["fast"] = RailConfig{}
	delete(rails, "slow")
	if got := p.Rails(); len(got) != 2 || got[0] != DefaultRail || got[1] != "slow" {
		t.Fatalf("Rails() = %q after the caller changed its map, want the rails given to New", got)
	}
	if p.cfg.MaxAttempts != MaxAttemptsDefault || p.cfg.Clock == nil || p.cfg.Logger == nil {
		t.Fatalf("New did not apply the defaults: %+v", p.cfg)
	}
	if _, err := p.ProcessBatch(context.Background()); !errors.Is(err, ErrNotRegistered) {
		t.Fatalf("ProcessBatch before Initialize = %v, want ErrNotRegistered", err)
	}
	if _, err := p.FireSchedules(context.Background()); !errors.Is(err, ErrNotRegistered) {
		t.Fatalf("FireSchedules before Initialize = %v, want ErrNotRegistered", err)
	}
	if err := p.Start(context.Background()); !errors.Is(err, ErrNotRegistered) {
		t.Fatalf("Start before Initialize = %v, want ErrNotRegistered", err)
	}
	if _, err := p.DB(); !errors.Is(err, ErrNotRegistered) {
		t.Fatalf("DB before Initialize = %v, want ErrNotRegistered", err)
	}
	if len(p.Paused()) != 0 {
		t.Fatal("Paused before Initialize is not empty")
	}
}
