//go:build linux

package reliability_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"gorm.io/gorm"
)

// The shape of TestDatabaseRestart: modest, so that both databases finish in well under a
// minute each on a 2-core machine.
const (
	restartCount     = 3                       // server crashes and restarts per database
	restartDowntime  = 1500 * time.Millisecond // how long the server stays down each time
	restartLoad      = time.Second             // producing and consuming between restarts
	restartProducers = 2                       // producer goroutines
	restartPerTx     = 10                      // messages per producer transaction
	restartTxPause   = 15 * time.Millisecond   // a producer's pause between transactions
	restartBurst     = 500                     // messages committed at once just before each crash
)

// TestDatabaseRestart crashes the database server and starts it again, three times, while
// producers and processors run on it (issue #6, "database restarted"). The server is a
// private one on a free port (see privateServer), never the shared one other tests use.
//
// Producers must see clear errors during the outage, and a producer transaction that
// failed must leave nothing behind; every transaction that committed must be consumed
// exactly once after the server is back, with processors recovering by themselves: none
// poisoned, no consumer paused by its breaker (the database going away is not the
// consumer's failure), and on PostgreSQL the notification listener back. Each crash comes
// just after a backlog is committed, so that processors are mid-batch when it hits.
// The databases run one after the other, to keep the load on the machine low.
func TestDatabaseRestart(t *testing.T) {
	for _, dialect := range []string{"postgres", "mysql"} {
		t.Run(dialect, func(t *testing.T) { testDatabaseRestart(t, dialect) })
	}
}

// txOutcome is what a producer knows about one of its transactions.
type txOutcome int

const (
	// txCommitted: db.Transaction returned nil.
	txCommitted txOutcome = iota
	// txFailed: it failed before COMMIT was sent (at BEGIN or at the insert), so the
	// server rolled it back: none of its messages may exist.
	txFailed
	// txUnknown: COMMIT itself failed. The server may have committed before the connection
	// broke, so its messages may or may not exist, but all or none of them.
	txUnknown
)

// producedTx is one producer transaction: messages first..first+count-1.
type producedTx struct {
	first      int
	count      int
	outcome    txOutcome
	stage      string // where a failed transaction failed: "begin", "insert" or "commit"
	err        error
	start, end time.Time
}

// ledger is what the producers know: every transaction they ran and how it ended.
type ledger struct {
	mu      sync.Mutex
	txs     []producedTx
	commits atomic.Int64 // transactions committed so far, to see producers recover
}

// add records one transaction.
func (l *ledger) add(tx producedTx) {
	l.mu.Lock()
	l.txs = append(l.txs, tx)
	l.mu.Unlock()
	if tx.outcome == txCommitted {
		l.commits.Add(1)
	}
}

// produceTx runs one producer transaction of count messages with unique increasing
// numbers, drawn from next, and records it in l. It gets 10 s: one that hangs instead of
// failing shows as a deadline error, which the test rejects.
func produceTx(db *gorm.DB, next *atomic.Int64, l *ledger, count int) producedTx {
	first := int(next.Add(int64(count))) - count
	batch := make([]Work, count)
	for i := range batch {
		batch[i] = Work{N: first + i}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	stage := "begin"
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		stage = "insert"
		if err := am.ProduceBatch(tx, batch).Error; err != nil {
			return err
		}
		stage = "commit" // gorm commits once this returns nil
		return nil
	})
	rec := producedTx{first: first, count: count, err: err, start: start, end: time.Now()}
	switch {
	case err == nil:
		rec.outcome = txCommitted
	case stage == "commit":
		rec.outcome, rec.stage = txUnknown, stage
	default:
		rec.outcome, rec.stage = txFailed, stage
	}
	l.add(rec)
	return rec
}

// produceUntil runs producer transactions of restartPerTx messages until ctx ends.
func produceUntil(ctx context.Context, db *gorm.DB, next *atomic.Int64, l *ledger) {
	for ctx.Err() == nil {
		pause := restartTxPause
		if produceTx(db, next, l, restartPerTx).err != nil {
			pause *= 2
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
}

// logCounter is the plugin's logger here: it counts warnings and errors by message, so
// the test can show that processors met the outage, and keeps the first error of each.
type logCounter struct {
	mu     sync.Mutex
	counts map[string]int
	first  map[string]string
}

// newLogCounter returns an empty logCounter.
func newLogCounter() *logCounter {
	return &logCounter{counts: map[string]int{}, first: map[string]string{}}
}

// Enabled implements slog.Handler: warnings and errors only.
func (h *logCounter) Enabled(_ context.Context, level slog.Level) bool {
	return level >= slog.LevelWarn
}

// Handle implements slog.Handler.
func (h *logCounter) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.counts[r.Message]++
	if _, ok := h.first[r.Message]; !ok {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "error" {
				h.first[r.Message] = a.Value.String()
				return false
			}
			return true
		})
	}
	return nil
}

// WithAttrs implements slog.Handler; attributes are not needed for counting.
func (h *logCounter) WithAttrs([]slog.Attr) slog.Handler { return h }

// WithGroup implements slog.Handler.
func (h *logCounter) WithGroup(string) slog.Handler { return h }

// count returns how many records had message msg.
func (h *logCounter) count(msg string) (int, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.counts[msg], h.first[msg]
}

// matching counts the records whose message contains s, and lists those messages with
// their counts and first errors.
func (h *logCounter) matching(s string) (int, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	var list []string
	for msg, c := range h.counts {
		if strings.Contains(msg, s) {
			n += c
			list = append(list, fmt.Sprintf("%q × %d (first error: %s)", msg, c, h.first[msg]))
		}
	}
	sort.Strings(list)
	return n, strings.Join(list, "; ")
}

// summary lists every message counted, for the test log.
func (h *logCounter) summary() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var parts []string
	for msg, n := range h.counts {
		parts = append(parts, fmt.Sprintf("%q × %d (first error: %s)", msg, n, h.first[msg]))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

// outage is one crash of the server: down from down until it accepted queries again at up.
type outage struct{ down, up time.Time }

// testDatabaseRestart is TestDatabaseRestart on one database.
func testDatabaseRestart(t *testing.T, dialect string) {
	began := time.Now()
	srv := startPrivateServer(t, dialect)
	db := srv.open("amrel")
	logs := newLogCounter()
	p := migratedWorker(t, db, am.Config{ConsumerProcessors: 2, ProcessorMinDelay: time.Millisecond,
		ProcessorMaxDelay: 50 * time.Millisecond, Logger: slog.New(logs)})
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stopPlugin := func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	}
	t.Cleanup(stopPlugin) // runs before the server's cleanup, which was registered first

	var l ledger
	var next atomic.Int64
	ctx, stopProducers := context.WithCancel(context.Background())
	var producers sync.WaitGroup
	for range restartProducers {
		producers.Add(1)
		go func() {
			defer producers.Done()
			produceUntil(ctx, db, &next, &l)
		}()
	}
	producersStopped := false
	haltProducers := func() {
		if !producersStopped {
			producersStopped = true
			stopProducers()
			producers.Wait()
		}
	}
	t.Cleanup(haltProducers) // a failed restart must not leave them running

	time.Sleep(restartLoad)
	var outages []outage
	var recovered []string
	for range restartCount {
		// A backlog just before the crash: both processors are in the middle of full
		// batches when the server dies.
		if rec := produceTx(db, &next, &l, restartBurst); rec.err != nil {
			t.Fatalf("backlog before the crash: %v", rec.err)
		}
		time.Sleep(20 * time.Millisecond)
		down := time.Now()
		srv.crash()
		time.Sleep(restartDowntime)
		srv.start()
		up := time.Now()
		outages = append(outages, outage{down: down, up: up})
		before := l.commits.Load()
		testdb.Eventually(t, 30*time.Second, func() bool { return l.commits.Load() > before },
			"producers commit again after the server restarted")
		recovered = append(recovered, time.Since(up).Round(time.Millisecond).String())
		time.Sleep(restartLoad)
	}
	lastUp := outages[len(outages)-1].up
	haltProducers()

	var pending int64
	testdb.Eventually(t, 2*time.Minute, func() bool {
		if err := db.Model(&am.ConsumerMessage{}).Count(&pending).Error; err != nil || pending > 0 {
			time.Sleep(50 * time.Millisecond)
			return false
		}
		return true
	}, "queue drained after the last restart (%d messages pending)", &pending)
	drained := time.Since(lastUp)
	listener := "none (no LISTEN on MariaDB)"
	if dialect == "postgres" {
		listener = waitListener(t, db, lastUp)
	}
	stopPlugin()

	r := checkRestartLedger(t, db, &l, outages)
	batchErrors, batchErr := logs.count("asyncmonolith: claiming messages failed")
	t.Logf("%s: produced %d messages in %d transactions: committed %d tx (%d msgs), failed %d tx (%d msgs; %s), "+
		"COMMIT failed (outcome unknown) %d tx (%d of them had committed); consumed %d, duplicated %d, poisoned %d, half-written %d tx, "+
		"lost %d, pending %d; restarts %d (down %s each; producers committing again %v after each start); "+
		"producer failures while the server was up %d; slowest failed producer transaction %s; processor batch errors %d; "+
		"drained %s after the last restart; listener back %s; whole test %s",
		dialect, r.messages, len(l.txs), r.committed, r.committedMessages, r.failed, r.failedMessages, r.stages(),
		r.unknown, r.unknownCommitted, r.consumed, len(r.duplicated), r.poisoned, len(r.half),
		len(r.lost), r.pending, restartCount, restartDowntime, recovered,
		r.outsideOutage, r.slowestFailure.Round(time.Millisecond), batchErrors,
		drained.Round(time.Millisecond), listener, time.Since(began).Round(time.Millisecond))
	for _, stage := range []string{"begin", "insert", "commit"} {
		if err := r.examples[stage]; err != nil {
			t.Logf("%s: a producer transaction that failed at %s: %v", dialect, stage, err)
		}
	}
	if r.outsideExample != nil {
		t.Logf("%s: a producer failure while the server was up: %v", dialect, r.outsideExample)
	}
	t.Logf("%s: processor batch error: %s", dialect, batchErr)
	t.Logf("%s: library warnings and errors: %s", dialect, logs.summary())
	if dialect == "mysql" {
		t.Logf("%s: the MySQL driver logged %s", dialect, &srv.driverLog)
	}
	if batchErrors == 0 {
		t.Errorf("processors logged no failed claim: the outage did not reach them")
	}
	if c := p.Counters(); c.SetAside > 0 {
		_, records := logs.matching("set aside")
		t.Errorf("the outage paused the consumer (its breaker set %d messages aside; logs: %s): a database that went away "+
			"is not the consumer's failure, and the pause delays the drain after the server is back by the breaker's cooldown", c.SetAside, records)
	}
}

// waitListener waits until the plugin's PostgreSQL LISTEN connection is back after the
// last restart, and says how long after that restart it came. The listener reconnects
// with a backoff capped at 30 s (±20 %), so 45 s is enough; a listener that never comes
// back leaves processors in other processes without wake-ups, polling only.
func waitListener(t *testing.T, db *gorm.DB, lastUp time.Time) string {
	t.Helper()
	var n int64
	testdb.Eventually(t, 45*time.Second, func() bool {
		err := db.Raw("SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()").Scan(&n).Error
		if err != nil || n == 0 {
			time.Sleep(100 * time.Millisecond)
			return false
		}
		return true
	}, "the notification listener reconnects after the last restart")
	return fmt.Sprintf("%s after the last restart", time.Since(lastUp).Round(100*time.Millisecond))
}

// restartResult is what checkRestartLedger counted.
type restartResult struct {
	messages, consumed                int
	pending, poisoned                 int64
	committed, failed, unknown        int // transactions
	committedMessages, failedMessages int
	unknownCommitted                  int // txUnknown transactions whose messages exist
	byStage                           map[string]int
	examples                          map[string]error // the first error at each stage
	outsideOutage                     int              // failures of transactions that overlapped no outage
	outsideExample                    error
	slowestFailure                    time.Duration
	half, lost, duplicated, strangers []int
}

// stages is the failed transactions (COMMIT not sent) by stage, for the log.
func (r *restartResult) stages() string {
	return fmt.Sprintf("%d at BEGIN, %d at the insert", r.byStage["begin"], r.byStage["insert"])
}

// checkRestartLedger compares what the producers know with what the database holds:
// every committed message consumed exactly once, none of a failed transaction, the
// transactions whose COMMIT failed all-or-nothing, the queue empty, nothing poisoned;
// and every failure a clear error, not a hang.
func checkRestartLedger(t *testing.T, db *gorm.DB, l *ledger, outages []outage) restartResult {
	t.Helper()
	r := restartResult{byStage: map[string]int{}, examples: map[string]error{}}
	var ns []int
	if err := db.Model(&Consumption{}).Pluck("n", &ns).Error; err != nil {
		t.Fatal(err)
	}
	seen := make(map[int]int, len(ns))
	for _, n := range ns {
		seen[n]++
		if seen[n] == 2 {
			r.duplicated = append(r.duplicated, n)
		}
	}
	r.consumed = len(seen)
	owned := 0
	for _, tx := range l.txs {
		r.messages += tx.count
		present := 0
		for n := tx.first; n < tx.first+tx.count; n++ {
			if seen[n] > 0 {
				present++
			}
		}
		owned += present
		switch tx.outcome {
		case txCommitted:
			r.committed++
			r.committedMessages += tx.count
			for n := tx.first; n < tx.first+tx.count; n++ {
				if seen[n] == 0 {
					r.lost = append(r.lost, n)
				}
			}
			continue
		case txFailed:
			r.failed++
			r.failedMessages += tx.count
			if present > 0 {
				r.half = append(r.half, tx.first)
			}
		case txUnknown:
			r.unknown++
			switch present {
			case 0:
			case tx.count:
				r.unknownCommitted++
			default:
				r.half = append(r.half, tx.first)
			}
		}
		r.byStage[tx.stage]++
		if r.examples[tx.stage] == nil {
			r.examples[tx.stage] = tx.err
		}
		if tx.err == nil {
			t.Errorf("transaction %d: failed without an error", tx.first)
		}
		if errors.Is(tx.err, context.DeadlineExceeded) {
			t.Errorf("a producer transaction hung for %s instead of failing: %v", tx.end.Sub(tx.start), tx.err)
		}
		r.slowestFailure = max(r.slowestFailure, tx.end.Sub(tx.start))
		during := false
		for _, o := range outages {
			if tx.start.Before(o.up) && !tx.end.Before(o.down) {
				during = true
			}
		}
		if !during {
			r.outsideOutage++
			if r.outsideExample == nil {
				r.outsideExample = fmt.Errorf("at %s: %w", tx.stage, tx.err)
			}
		}
	}
	if owned != r.consumed {
		for n := range seen {
			if n < 0 || n >= r.messages {
				r.strangers = append(r.strangers, n)
			}
		}
	}
	if err := db.Model(&am.ConsumerMessage{}).Count(&r.pending).Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Model(&am.PoisonedMessage{}).Count(&r.poisoned).Error; err != nil {
		t.Fatal(err)
	}
	if r.pending != 0 {
		t.Errorf("%d messages still pending", r.pending)
	}
	if r.poisoned != 0 {
		var reasons []string
		db.Model(&am.PoisonedMessage{}).Limit(5).Pluck("last_error", &reasons)
		t.Errorf("%d messages poisoned by the outage, e.g. %q", r.poisoned, reasons)
	}
	if len(r.duplicated) > 0 {
		t.Errorf("database effects duplicated for %d messages, e.g. %v", len(r.duplicated), fewOf(r.duplicated))
	}
	if len(r.lost) > 0 {
		t.Errorf("lost %d committed messages, e.g. %v", len(r.lost), fewOf(r.lost))
	}
	if len(r.half) > 0 {
		t.Errorf("%d failed producer transactions left messages behind (half-written), first numbers e.g. %v", len(r.half), fewOf(r.half))
	}
	if len(r.strangers) > 0 {
		t.Errorf("%d consumed messages no producer made, e.g. %v", len(r.strangers), fewOf(r.strangers))
	}
	if r.failed+r.unknown == 0 {
		t.Errorf("no producer transaction failed: the outages were not exercised")
	}
	return r
}

// fewOf returns up to 5 values, for failure messages.
func fewOf(ns []int) []int {
	sort.Ints(ns)
	return ns[:min(len(ns), 5)]
}
