package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

// Job is the payload of the sections whose consumers do real work: wait (a network call
// that touches no database), write one row through Message.Tx, fail on the first attempt.
// N < 0 marks the straggler, whose completions are not counted as the fast messages'.
type Job struct {
	N        int  `json:"n"`
	WaitMs   int  `json:"wait_ms"`
	Write    bool `json:"write,omitempty"`
	FailOnce bool `json:"fail_once,omitempty"`
}

// Written is the row a writing consumer adds through Message.Tx (River's worker: through
// its own transaction, completed in it with JobCompleteTx).
type Written struct {
	ID    int64  `gorm:"primaryKey"`
	MsgID string `gorm:"size:64;index"`
	N     int
}

// TableName keeps the table apart from the library's.
func (Written) TableName() string { return "bench_writes" }

// Order is the application's own row in the appwrite section.
type Order struct {
	ID int64 `gorm:"primaryKey"`
	N  int
}

// TableName keeps the table apart from the library's.
func (Order) TableName() string { return "bench_orders" }

var errFailOnce = errors.New("bench: planned first-attempt failure")

// sleepCtx waits d, or until ctx is done, like a network call that honours its context.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// workload is the library running Job consumers on one schema, and what they were seen
// to do: runs and committed successes per message, consumers running at once.
type workload struct {
	*ours
	mu        sync.Mutex
	runs      map[string]int  // consumer runs per message id
	successes map[string]int  // committed successes per message id (AfterConsume)
	slow      map[string]bool // the stragglers' ids
	done      atomic.Int64    // distinct fast messages committed as done
	inflight  atomic.Int64    // consumers inside Consume now
	peak      atomic.Int64    // the most consumers seen inside Consume at once
	started   chan struct{}   // closed when the first consumer starts
	startOnce sync.Once
	lastDone  time.Time     // the latest committed success (under mu)
	maxGap    time.Duration // the longest time between two committed successes (under mu): a stall
	gapAt     int           // how many messages were done when it ended (under mu)
}

// newWorkload opens db with the plugin on cfg (plus a silent logger and the bench's
// AfterConsume hook), registers the Job consumer and empties the tables.
func newWorkload(c config, db *gorm.DB, cfg am.Config) (*workload, error) {
	w := &workload{runs: map[string]int{}, successes: map[string]int{}, slow: map[string]bool{}, started: make(chan struct{})}
	cfg.Hooks.AfterConsume = w.afterConsume
	o, err := newOursOn(db, cfg)
	if err != nil {
		return nil, err
	}
	w.ours = o
	if err := am.Register[Job](o.p, am.ConsumerFunc[Job](w.consume), am.WithName("Job")); err != nil {
		o.close()
		return nil, err
	}
	if err := db.AutoMigrate(&Written{}, &Order{}); err != nil {
		o.close()
		return nil, err
	}
	// TRUNCATE the queue (no dead rows for the claims to scan); DELETE the small tables,
	// which costs less than the DDL of a TRUNCATE on MariaDB.
	for _, table := range []string{"consumer_messages", "poisoned_messages", "bench_writes", "bench_orders"} {
		stmt := "DELETE FROM " + table
		if table == "consumer_messages" && c.dialect != "sqlite" {
			stmt = "TRUNCATE TABLE " + table
		}
		if err := db.Exec(stmt).Error; err != nil {
			o.close()
			return nil, err
		}
	}
	return w, nil
}

func (w *workload) consume(ctx context.Context, m *am.Message[Job]) error {
	w.startOnce.Do(func() { close(w.started) })
	n := w.inflight.Add(1)
	defer w.inflight.Add(-1)
	for p := w.peak.Load(); n > p && !w.peak.CompareAndSwap(p, n); p = w.peak.Load() {
	}
	w.mu.Lock()
	w.runs[m.ID]++
	if m.Payload.N < 0 {
		w.slow[m.ID] = true
	}
	w.mu.Unlock()
	if err := sleepCtx(ctx, time.Duration(m.Payload.WaitMs)*time.Millisecond); err != nil {
		return err
	}
	if m.Payload.Write {
		if err := m.Tx.Create(&Written{MsgID: m.ID, N: m.Payload.N}).Error; err != nil {
			return err
		}
	}
	if m.Payload.FailOnce && m.Attempt == 1 {
		return errFailOnce // after the write: it must roll back
	}
	return nil
}

func (w *workload) afterConsume(ctx context.Context, m am.MessageInfo, r am.Result) {
	if r.Err != nil {
		return
	}
	if m.ConsumerType != "Job" {
		w.completed.Add(1) // the app's Tick messages
		return
	}
	now := time.Now()
	w.mu.Lock()
	w.successes[m.ID]++
	first, slow := w.successes[m.ID] == 1, w.slow[m.ID]
	if gap := now.Sub(w.lastDone); !w.lastDone.IsZero() && !slow && gap > w.maxGap {
		w.maxGap, w.gapAt = gap, len(w.successes)
	}
	if !slow {
		w.lastDone = now
	}
	w.mu.Unlock()
	if first && !slow {
		w.done.Add(1)
	}
}

// fillJobs produces jobs, 1,000 per transaction, and updates the planner's statistics.
func (w *workload) fillJobs(jobs []Job) error {
	for i := 0; i < len(jobs); i += 1000 {
		b := jobs[i:min(len(jobs), i+1000)]
		if err := w.db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, b).Error }); err != nil {
			return err
		}
	}
	analyze := map[string]string{"postgres": "VACUUM ANALYZE consumer_messages", "mysql": "ANALYZE TABLE consumer_messages", "sqlite": "ANALYZE"}
	return w.db.Exec(analyze[w.db.Dialector.Name()]).Error
}

// burnDown starts the processors and returns the time until `fast` distinct fast messages
// were committed as done; then it waits (untimed, up to a minute) for every message to be
// done, and stops the processors.
func (w *workload) burnDown(fast, all int) (time.Duration, error) {
	start := time.Now()
	if err := w.p.Start(context.Background()); err != nil {
		return 0, err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = w.p.Stop(ctx)
	}()
	if err := awaitCount(&w.done, fast, start); err != nil {
		return 0, err
	}
	elapsed := time.Since(start)
	for end := time.Now().Add(time.Minute); w.doneAll() < all && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
	return elapsed, nil
}

// doneAll is how many distinct messages (stragglers included) were committed as done.
func (w *workload) doneAll() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.successes)
}

// check compares what happened with what a correct runtime does for jobs (after Stop):
// each message completed once, run once (twice if it fails once), its write committed
// once, nothing left queued or poisoned. It returns "" or what differed.
func (w *workload) check(jobs []Job) string {
	var wantRuns, wantWrites int
	for _, j := range jobs {
		wantRuns++
		if j.FailOnce {
			wantRuns++
		}
		if j.Write {
			wantWrites++
		}
	}
	var bad []string
	w.mu.Lock()
	runs, twice := 0, 0
	for _, n := range w.runs {
		runs += n
	}
	for _, n := range w.successes {
		if n > 1 {
			twice++
		}
	}
	doneMsgs := len(w.successes)
	w.mu.Unlock()
	if doneMsgs != len(jobs) {
		bad = append(bad, fmt.Sprintf("%d of %d messages completed", doneMsgs, len(jobs)))
	}
	if twice > 0 {
		bad = append(bad, fmt.Sprintf("%d messages completed more than once", twice))
	}
	if runs != wantRuns {
		bad = append(bad, fmt.Sprintf("%d consumer runs for %d expected", runs, wantRuns))
	}
	var rows, distinct, queued, poisoned int64
	w.db.Raw("SELECT COUNT(*), COUNT(DISTINCT msg_id) FROM bench_writes").Row().Scan(&rows, &distinct)
	w.db.Raw("SELECT COUNT(*) FROM consumer_messages WHERE consumer_type = 'Job'").Row().Scan(&queued)
	w.db.Raw("SELECT COUNT(*) FROM poisoned_messages").Row().Scan(&poisoned)
	if rows != int64(wantWrites) || distinct != rows {
		bad = append(bad, fmt.Sprintf("%d rows written (%d distinct messages) for %d writers", rows, distinct, wantWrites))
	}
	if queued != 0 {
		bad = append(bad, fmt.Sprintf("%d messages still queued", queued))
	}
	if poisoned != 0 {
		bad = append(bad, fmt.Sprintf("%d poisoned", poisoned))
	}
	// The runtime's own account of trouble: none is expected in a burn-down on one plugin.
	k := w.p.Counters()
	for _, n := range []struct {
		what string
		n    uint64
	}{{"leases lost", k.LeaseLost}, {"claims failed", k.BatchErrors}, {"runs released", k.Released}} {
		if n.n > 0 {
			bad = append(bad, fmt.Sprintf("Counters: %d %s", n.n, n.what))
		}
	}
	return strings.Join(bad, "; ")
}

// checks collects the anomalies of a figure's runs, for its note.
type checks []string

func (cs *checks) add(run int, what string) {
	if what != "" {
		*cs = append(*cs, fmt.Sprintf("run %d: %s", run+1, what))
	}
}

func (cs checks) note() string {
	if len(cs) == 0 {
		return "each message done once, its runs and writes as expected"
	}
	return "!! " + strings.Join(cs, "; ")
}
