package asyncmonolith_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
)

// Written is one row a consumer writes through Message.Tx.
type Written struct {
	ID uint `gorm:"primaryKey"`
	N  int  `gorm:"index"`
	By string
}

// TestConcurrentMessageTxWritesAreIsolated: 100 consumers inside Consume at once, each
// writing one row through its Message.Tx, a third of them failing after the write (one
// attempt, so they are poisoned): exactly the others' rows exist, each once, and the
// failed ones are poisoned with their reason.
func TestConcurrentMessageTxWritesAreIsolated(t *testing.T) {
	t.Parallel()
	const total = 100
	eachDB(t, func(t *testing.T, dialect string) {
		// 20 connections for 100 consumers: a consumer holds one only while its Message.Tx is
		// open, and the servers are shared (PostgreSQL allows 100 connections in all).
		e := setup(t, dialect, quiet(am.Config{MaxAttempts: 1, ConsumerConcurrency: total, ProcessorBatchSize: total}),
			testdb.Options{MaxOpenConns: 20})
		if err := e.db.AutoMigrate(&Written{}); err != nil {
			t.Fatal(err)
		}
		g := newGauge()
		guard, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
			g.enter(0)
			waitCtx, stop := context.WithCancel(ctx)
			defer stop()
			go func() { <-guard.Done(); stop() }()
			// Every consumer is running before any writes, so the writes overlap.
			g.wait(waitCtx, func(g *gauge) bool { return g.most >= total })
			defer g.leave()
			if err := m.Tx.Create(&Written{N: m.Payload.N, By: m.ID}).Error; err != nil {
				return err
			}
			if m.Payload.N%3 == 0 {
				return fmt.Errorf("job %d fails after its write", m.Payload.N)
			}
			return nil
		}), am.WithName("Writer")); err != nil {
			t.Fatal(err)
		}
		produceJobs(t, e.db, total)
		ctx, cancelRun := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancelRun()
		n, err := e.p.ProcessBatch(ctx)
		if err != nil || n != total {
			t.Fatalf("ProcessBatch = %d, %v; want %d, nil", n, err, total)
		}
		if most, _ := g.snapshot(); most != total {
			t.Fatalf("at most %d consumers ran at once, want %d: the writes did not overlap", most, total)
		}
		var rows []Written
		if err := e.db.Order("n").Find(&rows).Error; err != nil {
			t.Fatal(err)
		}
		got := map[int]int{}
		for _, r := range rows {
			got[r.N]++
		}
		var problems []string
		for i := range total {
			want := 1
			if i%3 == 0 {
				want = 0
			}
			if got[i] != want {
				problems = append(problems, fmt.Sprintf("job %d: %d rows, want %d", i, got[i], want))
			}
		}
		if len(problems) > 0 {
			t.Fatalf("%d rows written; %s", len(rows), strings.Join(problems, "; "))
		}
		var poisoned []am.PoisonedMessage
		if err := e.db.Find(&poisoned).Error; err != nil {
			t.Fatal(err)
		}
		if len(poisoned) != (total+2)/3 {
			t.Fatalf("%d poisoned messages, want %d", len(poisoned), (total+2)/3)
		}
		for _, p := range poisoned {
			var job Job
			if err := json.Unmarshal([]byte(p.Payload), &job); err != nil || job.N%3 != 0 {
				t.Fatalf("poisoned %s has payload %s: not one of the failing jobs", p.ID, p.Payload)
			}
			if want := fmt.Sprintf("job %d fails after its write", job.N); !strings.Contains(p.LastError, want) || p.Attempts != 1 {
				t.Fatalf("poisoned job %d: attempts %d, reason %q, want 1 and %q", job.N, p.Attempts, p.LastError, want)
			}
		}
		if e.pending(t) != 0 {
			t.Fatalf("%d messages still pending", e.pending(t))
		}
		if c := e.p.Counters(); c.Succeeded != total-(total+2)/3 || c.Poisoned != (total+2)/3 {
			t.Fatalf("counters %+v", c)
		}
	})
}
