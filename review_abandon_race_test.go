package asyncmonolith_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// A consumer that times out and returns just as its AbandonGrace timer fires races the
// abandonment: exactly one outcome is recorded per run, never two, never none. Each of n
// consumers ignores its timeout and returns the moment the clock passes AbandonGrace,
// while the grace timers' goroutines abandon them; every message ends with one attempt
// counted, one AfterConsume report, one retry policy call and one failure counted, under
// ProcessBatch (which waits for every run's report) and under started processors (which
// hand each report to the completer).
func TestReviewReturnRacesAbandonGrace(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		for _, started := range []bool{false, true} {
			const n, timeout, grace = 40, time.Minute, time.Second
			var mu sync.Mutex
			reports := map[string]int{}
			var asked atomic.Int64
			e := setup(t, dialect, am.Config{ConsumerConcurrency: n, ProcessorBatchSize: n, ConsumerTimeout: timeout,
				AbandonGrace: grace, DisableBreaker: true, RetryPolicy: am.RetryPolicyFunc(func(am.MessageInfo, error) time.Duration {
					asked.Add(1)
					return time.Hour
				}),
				Hooks: am.Hooks{AfterConsume: func(_ context.Context, m am.MessageInfo, _ am.Result) {
					mu.Lock()
					reports[m.ID]++
					mu.Unlock()
				}}})
			var running atomic.Int64
			fired := make(chan struct{})
			if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
				running.Add(1)
				<-ctx.Done() // its timeout
				<-fired      // then returns as AbandonGrace passes
				return ctx.Err()
			}), am.WithName("Racer")); err != nil {
				t.Fatal(err)
			}
			jobs := make([]Job, n)
			for i := range jobs {
				jobs[i].N = i
			}
			produceRetryJobs(t, e, jobs...)
			var wait func() int
			if started {
				e.start(t)
			} else {
				wait = e.batchAsync(t)
			}
			// The n timeouts, once the n consumers run; then the n AbandonGrace timers.
			e.advanceWhenTimers(t, n, timeout, func() bool { return running.Load() == n })
			e.advanceWhenTimers(t, n, grace, func() bool { return true })
			close(fired)
			if started {
				eventually(t, func() bool { return e.p.Counters().Failed >= n }, "every failure recorded")
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				err := e.p.Stop(ctx)
				cancel()
				if err != nil {
					t.Fatalf("Stop: %v", err)
				}
			} else if got := wait(); got != n {
				t.Fatalf("ProcessBatch claimed %d, want %d", got, n)
			}
			rows := rowsByPayload(t, e)
			if len(rows) != n {
				t.Fatalf("started=%v: %d messages pending, want %d", started, len(rows), n)
			}
			for _, r := range rows {
				if r.Attempts != 1 || r.AvailableAfter != e.clock.Now().Add(time.Hour).UnixMilli() {
					t.Fatalf("started=%v: %+v, want 1 attempt, due an hour after the race", started, r)
				}
			}
			mu.Lock()
			for id, k := range reports {
				if k != 1 {
					t.Errorf("started=%v: message %s reported %d times, want once", started, id, k)
				}
			}
			got := len(reports)
			mu.Unlock()
			if cs := e.p.Counters(); got != n || cs.Failed != n || asked.Load() != n {
				t.Fatalf("started=%v: %d messages reported, %d failures counted, policy asked %d times; want %d of each",
					started, got, cs.Failed, asked.Load(), n)
			}
		}
	})
}
