package reliability_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

// TestBacklogMillion processes a queue of 1,000,000 pending messages on PostgreSQL beside
// one of 1,000: the processors' memory must not grow with the backlog (it holds one batch
// at a time, whatever is pending), and the time per batch is reported for both (timings
// are not asserted: these machines are shared). AM_BACKLOG overrides the large size.
func TestBacklogMillion(t *testing.T) {
	large := 1_000_000
	if v := os.Getenv("AM_BACKLOG"); v != "" {
		if _, err := fmt.Sscan(v, &large); err != nil {
			t.Fatalf("AM_BACKLOG=%q: %v", v, err)
		}
	}
	small := backlogRun(t, 1_000)
	big := backlogRun(t, large)
	t.Logf("backlog %d: %.2f ms per batch of 100 (fetch %.2f ms), %.0f msg/s; heap in use while processing: max %.1f MiB",
		1_000, small.msPerBatch, small.msPerFetch, small.perSec, small.maxHeapMiB)
	t.Logf("backlog %d: %.2f ms per batch of 100 (fetch %.2f ms), %.0f msg/s; heap in use while processing: max %.1f MiB",
		large, big.msPerBatch, big.msPerFetch, big.perSec, big.maxHeapMiB)
	t.Logf("throughput %d ÷ %d pending: %.2f; peak RSS of the test process: %s", large, 1_000, big.perSec/small.perSec, peakRSS())
	// Memory: the large backlog may not cost more than a little over the small one.
	if big.maxHeapMiB > 2*small.maxHeapMiB+16 {
		t.Fatalf("heap grew with the backlog: %.1f MiB at %d pending against %.1f MiB at 1,000", big.maxHeapMiB, large, small.maxHeapMiB)
	}
}

type backlogResult struct {
	msPerBatch, msPerFetch, perSec, maxHeapMiB float64
}

// backlogRun fills a fresh schema with n pending messages (server-side, in one statement),
// then runs two processors over the backlog, keeping it at n by producing as many messages
// as they consume, while sampling the heap; then it times batches run one at a time.
// The refill slice has room for a batch of 100.
func backlogRun(t *testing.T, n int) backlogResult {
	t.Helper()
	_, db := fresh(t, "postgres")
	var consumed atomic.Int64
	p := am.New(am.Config{ConsumerProcessors: 2, ProcessorMinDelay: time.Millisecond, Logger: testLogger(),
		Hooks: am.Hooks{AfterConsume: func(_ context.Context, _ am.MessageInfo, r am.Result) {
			if r.Err == nil {
				consumed.Add(1)
			}
		}}})
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	if err := am.Register[Work](p, am.ConsumerFunc[Work](func(context.Context, *am.Message[Work]) error { return nil }), am.WithName("Noop")); err != nil {
		t.Fatal(err)
	}
	if err := p.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	if err := db.Exec(`INSERT INTO consumer_messages (id, created_at, available_after, attempts, consumer_type, payload_type, payload, insert_id)
		SELECT 'b' || lpad(g::text, 25, '0'), 1, 1 + g / 1000, 0, 'Noop', 'Work', '{"n":' || g || '}', 'b' || lpad(g::text, 25, '0')
		FROM generate_series(1, ?) AS g`, n).Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Exec("VACUUM ANALYZE consumer_messages").Error; err != nil {
		t.Fatal(err)
	}

	// Processors over the backlog, topped up as they go, while the heap is sampled.
	runtime.GC()
	var maxHeap uint64
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	produced := 0
	refill := make([]Work, 0, 500)
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		for int(consumed.Load())-produced >= cap(refill) {
			refill = refill[:cap(refill)]
			if err := db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, refill).Error }); err != nil {
				t.Fatal(err)
			}
			produced += len(refill)
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		maxHeap = max(maxHeap, ms.HeapInuse)
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if consumed.Load() == 0 {
		t.Fatal("the processors consumed nothing")
	}
	// Back to n pending: between two top-ups fast processors can empty a small backlog.
	for deficit := int(consumed.Load()) - produced; deficit > 0; {
		k := min(deficit, cap(refill))
		if err := db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, refill[:k]).Error }); err != nil {
			t.Fatal(err)
		}
		produced += k
		deficit -= k
	}
	var pending int64
	if err := db.Model(&am.ConsumerMessage{}).Count(&pending).Error; err != nil {
		t.Fatal(err)
	}
	if pending != int64(n) {
		t.Fatalf("%d pending after topping up, want %d", pending, n)
	}
	// Deleted rows stay in the fetch index until vacuumed; autovacuum would get to them,
	// here it is done at once so that both sizes are timed in the same state.
	if err := db.Exec("VACUUM consumer_messages").Error; err != nil {
		t.Fatal(err)
	}

	// Batches one at a time, with the fetch timed on its own as the processors run it, the
	// backlog topped up after each (untimed).
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	fetchSQL := `SELECT id FROM consumer_messages WHERE available_after <= $1 ORDER BY available_after, created_at, id LIMIT 100 FOR UPDATE SKIP LOCKED`
	var batchTime, fetchTime time.Duration
	done := 0
	const batches = 30
	for i := range batches + 1 {
		tx, err := sqlDB.Begin()
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		rows, err := tx.Query(fetchSQL, time.Now().UnixMilli())
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
		}
		rows.Close()
		took := time.Since(start)
		_ = tx.Rollback()
		start = time.Now()
		k, err := p.ProcessBatch(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 { // the first is a warm-up
			fetchTime += took
			batchTime += time.Since(start)
			done += k
		}
		if err := db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, refill[:k]).Error }); err != nil {
			t.Fatal(err)
		}
	}
	if done == 0 {
		t.Fatal("no batch found messages")
	}
	return backlogResult{
		msPerBatch: float64(batchTime.Microseconds()) / 1000 / batches,
		msPerFetch: float64(fetchTime.Microseconds()) / 1000 / batches,
		perSec:     float64(done) / batchTime.Seconds(),
		maxHeapMiB: float64(maxHeap) / (1 << 20),
	}
}

// peakRSS is this process's peak resident set size, from /proc.
func peakRSS() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
