package asyncmonolith_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"gorm.io/gorm"
)

// The benchmarks report messages per second on each database:
//
//	go test -run '^$' -bench . -benchtime 20000x
//
// bench/ has the full comparison (River, raw SQL floors, latency, backlog).

func benchEnv(b *testing.B, dialect string, cfg am.Config) (*gorm.DB, *am.Plugin) {
	b.Helper()
	db := testdb.Open(b, dialect)
	cfg.Logger = newTextLogger(discard{})
	p := am.New(cfg)
	if err := db.Use(p); err != nil {
		b.Fatal(err)
	}
	if err := p.Migrate(context.Background(), db); err != nil {
		b.Fatal(err)
	}
	if err := am.Register[Job](p, am.ConsumerFunc[Job](func(context.Context, *am.Message[Job]) error { return nil }), am.WithName("Noop")); err != nil {
		b.Fatal(err)
	}
	return db, p
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkProduce measures produce throughput: one message per transaction, and 100
// per transaction with ProduceBatch.
func BenchmarkProduce(b *testing.B) {
	for _, dialect := range testdb.Dialects {
		for _, perTx := range []int{1, 100} {
			b.Run(fmt.Sprintf("%s/per_tx=%d", dialect, perTx), func(b *testing.B) {
				db, _ := benchEnv(b, dialect, am.Config{})
				jobs := make([]Job, perTx)
				b.ResetTimer()
				start := time.Now()
				for i := 0; i < b.N; i += perTx {
					if err := db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, jobs).Error }); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
			})
		}
	}
}

// BenchmarkConsume measures burn-down throughput of a no-op consumer: b.N messages are
// produced first, then processed with ProcessBatch until none is left.
func BenchmarkConsume(b *testing.B) {
	for _, dialect := range testdb.Dialects {
		b.Run(dialect, func(b *testing.B) {
			db, p := benchEnv(b, dialect, am.Config{ProcessorBatchSize: 100})
			jobs := make([]Job, 1000)
			for left := b.N; left > 0; left -= len(jobs) {
				batch := jobs[:min(left, len(jobs))]
				if err := db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, batch).Error }); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			start := time.Now()
			done := 0
			for done < b.N {
				n, err := p.ProcessBatch(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				if n == 0 {
					b.Fatalf("queue empty after %d of %d", done, b.N)
				}
				done += n
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
