package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"runtime/pprof"
	"sync/atomic"
	"syscall"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

// Tick is the benchmark's payload; Sent is the producer's clock just before commit.
type Tick struct {
	N    int   `json:"n"`
	Sent int64 `json:"sent"`
}

// ours is the library under test on one schema.
type ours struct {
	db        *gorm.DB
	p         *am.Plugin
	completed atomic.Int64
	onConsume func(m *am.Message[Tick])
	// set by produce and burnDown: heap allocations per message over the whole process,
	// and (burnDown) batches rolled back by a conflict and retried
	allocsPerMsg float64
	conflicts    uint64
	// set by burnDown: this process's CPU time (user + system) per message
	cpuPerMsg time.Duration
}

// cpuTime is this process's CPU time so far, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// mallocs is the process's cumulative count of heap allocations.
func mallocs() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.Mallocs
}

func newOurs(c config, schema string, cfg am.Config) (*ours, error) {
	db, err := openGorm(c, schema)
	if err != nil {
		return nil, err
	}
	return newOursOn(db, cfg)
}

// newOursOn installs the plugin on db (which it then owns), migrates, and registers the
// no-op Tick consumer; cfg gets a silent logger and the completion-counting hook unless it
// brings its own AfterConsume.
func newOursOn(db *gorm.DB, cfg am.Config) (*ours, error) {
	o := &ours{db: db}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if cfg.Hooks.AfterConsume == nil {
		cfg.Hooks.AfterConsume = func(ctx context.Context, m am.MessageInfo, r am.Result) {
			if r.Err == nil {
				o.completed.Add(1)
			}
		}
	}
	o.p = am.New(cfg)
	if err := db.Use(o.p); err != nil {
		return nil, err
	}
	if err := o.p.Migrate(context.Background(), db); err != nil {
		return nil, err
	}
	err := am.Register[Tick](o.p, am.ConsumerFunc[Tick](func(ctx context.Context, m *am.Message[Tick]) error {
		if o.onConsume != nil {
			o.onConsume(m)
		}
		return nil
	}), am.WithName("Noop"))
	return o, err
}

func (o *ours) close() {
	if s, err := o.db.DB(); err == nil {
		s.Close()
	}
}

// truncate empties the queue; TRUNCATE (not DELETE) so that no run scans the dead rows of
// the previous one.
func (o *ours) truncate() error {
	if o.db.Dialector.Name() == "sqlite" {
		return o.db.Exec("DELETE FROM consumer_messages").Error
	}
	return o.db.Exec("TRUNCATE TABLE consumer_messages").Error
}

// fill inserts n pending messages with ProduceBatch, 1,000 per transaction, then updates
// the planner's statistics, so that every consumer (ours, the floor) runs against the
// steady state autovacuum would reach, not against a table the planner thinks is empty.
func (o *ours) fill(n int) error {
	batch := make([]Tick, 1000)
	for left := n; left > 0; left -= len(batch) {
		b := batch[:min(left, len(batch))]
		if err := o.db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, b).Error }); err != nil {
			return err
		}
	}
	// VACUUM as well on PostgreSQL: a fresh fill of a million rows otherwise has autovacuum
	// setting hint bits under the measurement.
	analyze := map[string]string{"postgres": "VACUUM ANALYZE consumer_messages", "mysql": "ANALYZE TABLE consumer_messages", "sqlite": "ANALYZE"}
	return o.db.Exec(analyze[o.db.Dialector.Name()]).Error
}

// produce returns messages/s for `total` messages, perTx per transaction, with Produce calls
// (batch=false) or one ProduceBatch (batch=true).
func (o *ours) produce(total, perTx int, batch bool) (float64, error) {
	if err := o.truncate(); err != nil {
		return 0, err
	}
	ticks := make([]Tick, perTx)
	m0 := mallocs()
	start := time.Now()
	for i := 0; i < total; i += perTx {
		err := o.db.Transaction(func(tx *gorm.DB) error {
			if batch {
				return am.ProduceBatch(tx, ticks).Error
			}
			for j := range ticks {
				if err := am.Produce(tx, ticks[j]).Error; err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	rate := float64(total) / time.Since(start).Seconds()
	o.allocsPerMsg = float64(mallocs()-m0) / float64(total)
	return rate, nil
}

// burnDown fills n messages, starts the processors and returns messages/s until the last
// completion (counted by the AfterConsume hook, i.e. after each batch commits).
func (o *ours) burnDown(n int) (float64, error) {
	if err := o.truncate(); err != nil {
		return 0, err
	}
	if err := o.fill(n); err != nil {
		return 0, err
	}
	o.completed.Store(0)
	conflicts0 := o.p.Counters().Conflicts
	m0 := mallocs()
	cpu0 := cpuTime()
	start := time.Now()
	// The processors' goroutines carry the label (they inherit it from Start's caller), so
	// a -cpuprofile can be narrowed to them: go tool pprof -tagfocus phase=consume.
	var startErr error
	pprof.Do(context.Background(), pprof.Labels("phase", "consume"), func(ctx context.Context) { startErr = o.p.Start(ctx) })
	if startErr != nil {
		return 0, startErr
	}
	if err := awaitCount(&o.completed, n, start); err != nil {
		return 0, err
	}
	elapsed := time.Since(start)
	o.cpuPerMsg = (cpuTime() - cpu0) / time.Duration(n)
	o.allocsPerMsg = float64(mallocs()-m0) / float64(n)
	o.conflicts = o.p.Counters().Conflicts - conflicts0
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := o.p.Stop(ctx); err != nil {
		return 0, err
	}
	return float64(n) / elapsed.Seconds(), nil
}

// awaitCount waits until counter reaches n, polling every millisecond, for at most five
// minutes from start.
func awaitCount(counter *atomic.Int64, n int, start time.Time) error {
	deadline := start.Add(5 * time.Minute)
	for counter.Load() < int64(n) {
		if time.Now().After(deadline) {
			return fmt.Errorf("burn-down: %d of %d after 5 minutes", counter.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// batchTimes processes `batches` batches synchronously, topping the queue up with as many
// new messages after each (untimed), so that the backlog stays at its size; it returns the
// mean milliseconds per batch and messages/s over the timed batches.
func (o *ours) batchTimes(batches int) (msPerBatch, perSec float64, err error) {
	if _, err := o.p.ProcessBatch(context.Background()); err != nil { // warm-up: connection, prepared statements
		return 0, 0, err
	}
	topUp := make([]Tick, 100)
	var el time.Duration
	done := 0
	for range batches {
		start := time.Now()
		n, err := o.p.ProcessBatch(context.Background())
		el += time.Since(start)
		if err != nil {
			return 0, 0, err
		}
		if n == 0 {
			return 0, 0, errors.New("backlog ran out")
		}
		done += n
		if err := o.db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, topUp[:n]).Error }); err != nil {
			return 0, 0, err
		}
	}
	return float64(el.Microseconds()) / 1000 / float64(batches), float64(done) / el.Seconds(), nil
}
