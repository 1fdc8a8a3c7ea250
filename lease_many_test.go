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

// Fifty consumers of one payload, each with its own timeout (fifty leases in one claim)
// and names holding quotes, backslashes and non-ASCII letters: every message is leased for
// its own consumer, and one batch where every other run fails records each outcome under
// its own lease (none lost, none left claimed).
func TestLeasesManyConsumers(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, quiet(leaseConfig(am.Config{AttemptDelay: time.Minute})))
		const consumers, grace, margin = 50, time.Second, 10 * time.Second
		want := map[string]time.Duration{}
		fails := map[string]bool{}
		var wg sync.WaitGroup
		wg.Add(consumers)
		release := make(chan struct{})
		for i := range consumers {
			name := fmt.Sprintf("Cons'\"\\ ü€ %02d) THEN 0 --", i)
			timeout := time.Minute + time.Duration(i)*time.Second
			want[name] = timeout + grace + margin
			fails[name] = i%2 == 1
			if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
				wg.Done()
				<-release
				if fails[name] {
					return errors.New("failed on purpose")
				}
				return nil
			}), am.WithName(name), am.WithTimeout(timeout)); err != nil {
				t.Fatal(err)
			}
		}
		claimedAt := e.clock.Now()
		checkLeases(t, e, want, &wg, release)
		var rows []am.ConsumerMessage
		if err := e.db.Find(&rows).Error; err != nil {
			t.Fatal(err)
		}
		if len(rows) != consumers/2 {
			t.Fatalf("%d messages left, want the %d that failed", len(rows), consumers/2)
		}
		retryAt := claimedAt.Add(time.Minute).UnixMilli()
		for _, r := range rows {
			if !fails[r.ConsumerType] || r.Attempts != 1 || r.AvailableAfter != retryAt || r.Pending == nil {
				t.Errorf("%q left with attempts %d, due %d (want 1, %d), pending %v", r.ConsumerType, r.Attempts, r.AvailableAfter, retryAt, r.Pending)
			}
		}
		if c := e.p.Counters(); c.Succeeded != consumers/2 || c.Failed != consumers/2 || c.LeaseLost != 0 {
			t.Fatalf("counters %+v", c)
		}
	})
}
