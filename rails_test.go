package asyncmonolith_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"gorm.io/gorm"
)

// Rail tests' payloads.
type (
	fastJob struct{ N int }
	slowJob struct{ N int }
)

// peakGauge counts a consumer's concurrent runs and keeps the highest count seen.
type peakGauge struct{ cur, peak atomic.Int64 }

func (g *peakGauge) enter() {
	n := g.cur.Add(1)
	for {
		p := g.peak.Load()
		if n <= p || g.peak.CompareAndSwap(p, n) {
			return
		}
	}
}

func (g *peakGauge) leave() { g.cur.Add(-1) }

// produceAll writes payloads in one transaction.
func produceAll[T any](t *testing.T, db *gorm.DB, payloads []T) {
	t.Helper()
	if err := db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, payloads).Error }); err != nil {
		t.Fatal(err)
	}
}

// railProcessors is how many processors a rail may have on dialect (one without row locks).
func railProcessors(dialect string) int {
	if !caps(dialect).RowLocks() {
		return 1
	}
	return 2
}

// A rail's processors never run another rail's messages: the default rail runs one
// message at a time and its consumer blocks, so the slow rail's many slots would run its
// messages at once if they fetched them; and the other way round.
func TestRailProcessorsRunOnlyTheirRail(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{
			ConsumerProcessors: 1, ConsumerConcurrency: 1, ProcessorBatchSize: 1,
			Rails: map[string]am.RailConfig{"slow": {ConsumerProcessors: railProcessors(dialect), ConsumerConcurrency: 1, ProcessorBatchSize: 1}},
		})
		release := make(chan struct{})
		var onDefault, onSlow peakGauge
		var doneDefault, doneSlow atomic.Int64
		block := func(g *peakGauge, done *atomic.Int64) func(ctx context.Context) error {
			return func(ctx context.Context) error {
				g.enter()
				defer g.leave()
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
				done.Add(1)
				return nil
			}
		}
		bd, bs := block(&onDefault, &doneDefault), block(&onSlow, &doneSlow)
		if err := am.Register(e.p, am.ConsumerFunc[fastJob](func(ctx context.Context, _ *am.Message[fastJob]) error { return bd(ctx) }), am.WithName("Fast")); err != nil {
			t.Fatal(err)
		}
		if err := am.Register(e.p, am.ConsumerFunc[slowJob](func(ctx context.Context, _ *am.Message[slowJob]) error { return bs(ctx) }),
			am.WithName("Slow"), am.WithRail("slow")); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		for i := range 4 {
			if err := am.ProduceNow(ctx, e.db, fastJob{i}); err != nil {
				t.Fatal(err)
			}
			if err := am.ProduceNow(ctx, e.db, slowJob{i}); err != nil {
				t.Fatal(err)
			}
		}
		if n := e.count(t, &am.ConsumerMessage{}, "rail = ? AND consumer_type = ?", "slow", "Slow"); n != 4 {
			t.Fatalf("%d Slow messages stored on rail slow, want 4", n)
		}
		if n := e.count(t, &am.ConsumerMessage{}, "rail = ? AND consumer_type = ?", "", "Fast"); n != 4 {
			t.Fatalf("%d Fast messages stored on the default rail, want 4", n)
		}
		e.start(t)
		want := int64(railProcessors(dialect))
		eventually(t, func() bool { return onDefault.cur.Load() == 1 && onSlow.cur.Load() == want }, "each rail running its own messages")
		// Both rails are full: if either rail fetched the other's messages, more would run.
		stats, err := e.p.StatsByRail(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(stats) != 2 || stats[0].Rail != "" || stats[0].Running != 1 || stats[1].Rail != "slow" || stats[1].Running != want {
			t.Fatalf("StatsByRail while both rails are full: %+v", stats)
		}
		close(release)
		eventually(t, func() bool { return doneDefault.Load() == 4 && doneSlow.Load() == 4 }, "every message consumed")
		if p := onDefault.peak.Load(); p != 1 {
			t.Fatalf("the default rail (1 processor, concurrency 1) ran %d Fast messages at once", p)
		}
		if p := onSlow.peak.Load(); p != want {
			t.Fatalf("rail slow (%d processors, concurrency 1) ran %d Slow messages at once", want, p)
		}
	})
}

// A saturated rail whose consumer takes long (here: until the test ends) does not keep
// another rail's messages from completing.
func TestSlowRailDoesNotHoldUpAnotherRail(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{Rails: map[string]am.RailConfig{"slow": {ConsumerConcurrency: 2, ProcessorBatchSize: 2}}})
		release := make(chan struct{})
		var slowRunning, slowDone atomic.Int64
		var fast recorder[fastJob]
		if err := am.Register(e.p, &fast, am.WithName("Fast")); err != nil {
			t.Fatal(err)
		}
		if err := am.Register(e.p, am.ConsumerFunc[slowJob](func(ctx context.Context, _ *am.Message[slowJob]) error {
			slowRunning.Add(1)
			<-release // a consumer that takes longer than the whole test
			slowDone.Add(1)
			return nil
		}), am.WithName("Slow"), am.WithRail("slow"), am.WithTimeout(time.Hour)); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		slow := make([]slowJob, 20)
		produceAll(t, e.db, slow)
		e.start(t)
		t.Cleanup(func() { close(release) })
		eventually(t, func() bool { return slowRunning.Load() == 2 }, "the slow rail saturated")
		fastJobs := make([]fastJob, 300)
		for i := range fastJobs {
			fastJobs[i].N = i
		}
		produceAll(t, e.db, fastJobs)
		eventually(t, func() bool { return fast.count() == 300 }, "the default rail's messages consumed while the slow rail is saturated")
		if n := slowRunning.Load(); n != 2 || slowDone.Load() != 0 {
			t.Fatalf("slow rail: %d running, %d done; want 2 running (its concurrency), none done", n, slowDone.Load())
		}
		eventually(t, func() bool { return e.count(t, &am.ConsumerMessage{}, "consumer_type = ?", "Fast") == 0 }, "the Fast messages' completions recorded")
		stats, err := e.p.StatsByRail(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if stats[1].Rail != "slow" || stats[1].Pending != 20 || stats[1].Running != 2 || stats[0].Pending != 0 {
			t.Fatalf("StatsByRail: %+v", stats)
		}
	})
}

// Config.Rails and the consumer options are validated, naming what is wrong.
func TestRailValidation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		rails map[string]am.RailConfig
		field string
	}{
		{map[string]am.RailConfig{"Slow": {}}, `Rails["Slow"]`},
		{map[string]am.RailConfig{"-x": {}}, `Rails["-x"]`},
		{map[string]am.RailConfig{"": {}}, `Rails[""]`},
		{map[string]am.RailConfig{"slow": {ConsumerProcessors: -1}}, `Rails["slow"].ConsumerProcessors`},
		{map[string]am.RailConfig{"slow": {ProcessorBatchSize: am.ProcessorBatchSizeMax + 1}}, `Rails["slow"].ProcessorBatchSize`},
		{map[string]am.RailConfig{"ok": {}, "slow": {ConsumerConcurrency: -2}}, `Rails["slow"].ConsumerConcurrency`},
	} {
		db := testdb.Open(t, "sqlite")
		err := db.Use(am.New(am.Config{Rails: tc.rails}))
		var ce *am.ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field || !errors.Is(err, am.ErrInvalidConfig) {
			t.Errorf("Rails %v: %v; want a ConfigError for %s", tc.rails, err, tc.field)
		}
	}
	p := am.New(am.Config{Rails: map[string]am.RailConfig{"slow": {}}})
	noop := am.ConsumerFunc[fastJob](func(context.Context, *am.Message[fastJob]) error { return nil })
	for _, opts := range [][]am.ConsumerOption{
		{am.WithRail("nosuch")},
		{am.WithRail("Slow")},
		{am.WithConcurrency(0)},
		{am.WithConcurrency(-1)},
		{am.WithConcurrency(am.ConsumerConcurrencyMax + 1)},
	} {
		if err := am.Register(p, noop, opts...); !errors.Is(err, am.ErrInvalidOption) {
			t.Errorf("Register with %d options: %v, want ErrInvalidOption", len(opts), err)
		}
	}
	if err := am.Register(p, noop, am.WithRail("slow"), am.WithConcurrency(1)); err != nil {
		t.Fatal(err)
	}
	if got := p.Rails(); !slices.Equal(got, []string{"", "slow"}) {
		t.Fatalf("Rails() = %q", got)
	}
}

// On SQLite each rail runs one processor: asking a rail for more fails at Start, naming
// the rail; one processor per rail starts and serves every rail.
func TestSQLiteRailsOneProcessorEach(t *testing.T) {
	t.Parallel()
	e := setup(t, "sqlite", am.Config{Rails: map[string]am.RailConfig{"slow": {ConsumerProcessors: 2}}})
	err := e.p.Start(context.Background())
	if !errors.Is(err, am.ErrConcurrencyUnsupported) || !strings.Contains(err.Error(), `Rails["slow"].ConsumerProcessors = 2`) {
		t.Fatalf("Start: %v, want ErrConcurrencyUnsupported naming the rail", err)
	}
	e = setup(t, "sqlite", am.Config{Rails: map[string]am.RailConfig{"a": {}, "b": {}, "c": {}}})
	var got atomic.Int64
	for _, rail := range []string{"", "a", "b", "c"} {
		name := "On" + rail
		if err := am.Register(e.p, am.ConsumerFunc[fastJob](func(context.Context, *am.Message[fastJob]) error { got.Add(1); return nil }),
			am.WithName(name), am.WithRail(rail)); err != nil {
			t.Fatal(err)
		}
	}
	e.start(t)
	for i := range 25 {
		if err := am.ProduceNow(context.Background(), e.db, fastJob{i}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, func() bool { return got.Load() == 100 }, "every rail's messages consumed on SQLite")
}

// A poisoned message keeps its rail, and RequeuePoisoned puts it back on it.
func TestRequeueRestoresRail(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{Rails: map[string]am.RailConfig{"slow": {}}})
		var fail atomic.Bool
		fail.Store(true)
		var runs atomic.Int64
		if err := am.Register(e.p, am.ConsumerFunc[slowJob](func(context.Context, *am.Message[slowJob]) error {
			runs.Add(1)
			if fail.Load() {
				return errors.New("not yet")
			}
			return nil
		}), am.WithName("Slow"), am.WithRail("slow"), am.WithAttempts(1)); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := am.ProduceNow(ctx, e.db, slowJob{1}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.p.ProcessBatch(ctx); err != nil {
			t.Fatal(err)
		}
		var poisoned []am.PoisonedMessage
		if err := e.db.Find(&poisoned).Error; err != nil || len(poisoned) != 1 || poisoned[0].Rail != "slow" {
			t.Fatalf("poisoned: %+v, %v; want one on rail slow", poisoned, err)
		}
		if n, err := e.p.RequeuePoisoned(ctx, []string{poisoned[0].ID}); err != nil || n != 1 {
			t.Fatalf("requeue: %d, %v", n, err)
		}
		var back am.ConsumerMessage
		if err := e.db.Where("id = ?", poisoned[0].ID).Take(&back).Error; err != nil || back.Rail != "slow" {
			t.Fatalf("requeued: %+v, %v; want it on rail slow", back, err)
		}
		fail.Store(false)
		if _, err := e.p.ProcessBatch(ctx); err != nil {
			t.Fatal(err)
		}
		if runs.Load() != 2 || e.pending(t) != 0 {
			t.Fatalf("after requeue: %d runs, %d pending", runs.Load(), e.pending(t))
		}
	})
}

// Rows written by hand: without a rail (or with ”), they are the default rail's; on a rail
// this plugin does not run, they are never fetched here, and StatsByRail shows them under
// that rail, Configured false.
func TestHandWrittenRowsRails(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{Rails: map[string]am.RailConfig{"slow": {}}})
		var fast recorder[fastJob]
		if err := am.Register(e.p, &fast, am.WithName("Fast")); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		due := e.clock.Now().Add(-time.Second).UnixMilli()
		if err := e.db.Exec("INSERT INTO consumer_messages (id, created_at, available_after, attempts, consumer_type, payload_type, payload, insert_id) VALUES (?, ?, ?, 0, ?, ?, ?, ?)",
			"hand-1", due, due, "Fast", "fastJob", `{"N":1}`, "hand-1").Error; err != nil {
			t.Fatal(err)
		}
		if err := e.db.Exec("INSERT INTO consumer_messages (id, created_at, available_after, attempts, consumer_type, payload_type, payload, insert_id, rail) VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?)",
			"hand-2", due, due, "Fast", "fastJob", `{"N":2}`, "hand-2", "").Error; err != nil {
			t.Fatal(err)
		}
		if err := e.db.Exec("INSERT INTO consumer_messages (id, created_at, available_after, attempts, consumer_type, payload_type, payload, insert_id, rail) VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?)",
			"hand-3", due, due, "Fast", "fastJob", `{"N":3}`, "hand-3", "gone").Error; err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if _, err := e.p.ProcessBatch(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if fast.count() != 2 {
			t.Fatalf("consumed %d hand-written rows, want the 2 on the default rail", fast.count())
		}
		var left am.ConsumerMessage
		if err := e.db.Take(&left).Error; err != nil || left.ID != "hand-3" || left.Attempts != 0 {
			t.Fatalf("left: %+v, %v; want hand-3 untouched", left, err)
		}
		stats, err := e.p.StatsByRail(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := []am.RailStats{{Rail: "", Configured: true}, {Rail: "slow", Configured: true},
			{Rail: "gone", Configured: false, Pending: 1, Due: 1, OldestDueAge: time.Second}}
		if !slices.Equal(stats, want) {
			t.Fatalf("StatsByRail = %+v\nwant %+v", stats, want)
		}
		qs, err := e.p.Stats(ctx)
		if err != nil || len(qs) != 1 || qs[0].Rail != "gone" || qs[0].ConsumerType != "Fast" {
			t.Fatalf("Stats = %+v, %v", qs, err)
		}
		if sum := e.p.SumByRail(qs); !slices.Equal(sum, want) {
			t.Fatalf("SumByRail(Stats) = %+v\nwant %+v", sum, want)
		}
	})
}

// Produce writes each consumer's rail; a payload with consumers on two rails makes one row
// on each.
func TestProduceWritesEachConsumersRail(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{Rails: map[string]am.RailConfig{"slow": {}}})
		var a, b recorder[fastJob]
		if err := am.Register(e.p, &a, am.WithName("A")); err != nil {
			t.Fatal(err)
		}
		if err := am.Register(e.p, &b, am.WithName("B"), am.WithRail("slow")); err != nil {
			t.Fatal(err)
		}
		produceAll(t, e.db, []fastJob{{1}, {2}})
		var rows []am.ConsumerMessage
		if err := e.db.Order("consumer_type, id").Find(&rows).Error; err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range rows {
			got = append(got, fmt.Sprintf("%s@%q", r.ConsumerType, r.Rail))
		}
		if !slices.Equal(got, []string{`A@""`, `A@""`, `B@"slow"`, `B@"slow"`}) {
			t.Fatalf("rows: %v", got)
		}
	})
}
