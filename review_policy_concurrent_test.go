package asyncmonolith_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// Retry policies asked at once by many runs, on two rails, by started processors and by
// ProcessBatch beside them (run with -race): each failed run asks its own consumer's
// policy (WithRetryPolicy, else Config.RetryPolicy) exactly once, with its own message
// and error, and its row is due after the delay that policy chose.
func TestReviewRetryPoliciesAskedConcurrently(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		const n = 60
		var mu sync.Mutex
		asked := map[string]int{} // consumer/message id → calls
		policy := func(name string, delay time.Duration) am.RetryPolicy {
			return am.RetryPolicyFunc(func(m am.MessageInfo, err error) time.Duration {
				if m.ConsumerType != name || err == nil || err.Error() != "fail "+m.ID {
					panic(fmt.Sprintf("policy %s asked about %s (%s) with %v", name, m.ID, m.ConsumerType, err))
				}
				mu.Lock()
				asked[name+"/"+m.ID]++
				mu.Unlock()
				return delay + time.Duration(m.Attempt)*time.Millisecond
			})
		}
		processors := 1
		if caps(dialect).RowLocks() {
			processors = 2
		}
		e := setup(t, dialect, am.Config{DisableBreaker: true, ConsumerProcessors: processors, ProcessorBatchSize: 7,
			RetryPolicy: policy("Plain", time.Minute), Rails: map[string]am.RailConfig{"side": {ProcessorBatchSize: 5}}})
		fail := am.ConsumerFunc[Job](func(_ context.Context, m *am.Message[Job]) error { return errors.New("fail " + m.ID) })
		for _, c := range []struct {
			name string
			opts []am.ConsumerOption
		}{
			{"Plain", nil},
			{"Own", []am.ConsumerOption{am.WithRetryPolicy(policy("Own", 2*time.Minute))}},
			{"Side", []am.ConsumerOption{am.WithRail("side"), am.WithRetryPolicy(policy("Side", 3*time.Minute))}},
		} {
			if err := am.Register[Job](e.p, fail, append(c.opts, am.WithName(c.name))...); err != nil {
				t.Fatal(err)
			}
		}
		jobs := make([]Job, n)
		for i := range jobs {
			jobs[i].N = i
		}
		produceRetryJobs(t, e, jobs...)
		now := e.clock.Now()
		e.start(t)
		stop := batchLoop(e, am.ErrRetryable) // a claim that stays in conflict past ProcessBatch's own retries
		eventually(t, func() bool {
			var left int64
			if err := e.db.Model(&am.ConsumerMessage{}).Where("attempts = 0").Count(&left).Error; err != nil {
				t.Fatal(err)
			}
			return left == 0
		}, "every message failed once")
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		var rows []am.ConsumerMessage
		if err := e.db.Find(&rows).Error; err != nil {
			t.Fatal(err)
		}
		delays := map[string]time.Duration{"Plain": time.Minute, "Own": 2 * time.Minute, "Side": 3 * time.Minute}
		mu.Lock()
		defer mu.Unlock()
		if len(rows) != 3*n || len(asked) != 3*n {
			t.Fatalf("%d rows, policies asked about %d messages; want %d of each", len(rows), len(asked), 3*n)
		}
		for _, r := range rows {
			if k := asked[r.ConsumerType+"/"+r.ID]; k != 1 || r.Attempts != 1 ||
				r.AvailableAfter != now.Add(delays[r.ConsumerType]+time.Millisecond).UnixMilli() {
				t.Fatalf("%+v: its policy asked %d times; want once, 1 attempt, due now+%s", r, k, delays[r.ConsumerType]+time.Millisecond)
			}
		}
	})
}
