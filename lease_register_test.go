package asyncmonolith_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// A consumer registered while its message is being claimed (the claim leased it as a type
// this process did not know) must not run under that lease: its timeout is an hour, the
// lease a few seconds, so another processor would run it again meanwhile and fencing would
// refuse this run's completion. The message goes back, no attempt counted, and runs under
// a lease that covers its timeout.
func TestRegisterDuringClaimKeepsRunInsideLease(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		c := newClock()
		var armed atomic.Bool
		var once sync.Once
		var e *env
		var seen atomic.Int64 // the Report row's available_after while its consumer runs
		register := func() {
			if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
				var row am.ConsumerMessage
				if err := e.db.WithContext(ctx).Where("id = ?", m.ID).Take(&row).Error; err != nil {
					return err
				}
				seen.Store(row.AvailableAfter)
				return nil
			}), am.WithName("Report"), am.WithTimeout(time.Hour)); err != nil {
				t.Error(err)
			}
		}
		cfg := quiet(leaseConfig(am.Config{}))
		cfg.Clock = readHook{c, func() time.Time {
			if armed.Load() {
				// The first clock reading after the claim committed: before the runs start.
				var running int64
				e.db.Model(&am.ConsumerMessage{}).Where("consumer_type = ? AND pending IS NULL", "Report").Count(&running)
				if running == 1 {
					once.Do(register)
				}
			}
			return c.Now()
		}}
		e = setup(t, dialect, cfg)
		if err := am.Register[Job](e.p, Flaky{&recorder[Job]{}}, am.WithName("Email")); err != nil {
			t.Fatal(err)
		}
		if err := am.ProduceNow(context.Background(), e.db, Job{N: 1}); err != nil {
			t.Fatal(err)
		}
		// A message of a consumer another instance runs (registered here in a moment).
		var row am.ConsumerMessage
		if err := e.db.Take(&row).Error; err != nil {
			t.Fatal(err)
		}
		row.ID, row.InsertID, row.ConsumerType = "report-1", "report-1", "Report"
		if err := e.db.Create(&row).Error; err != nil {
			t.Fatal(err)
		}
		armed.Store(true)
		for i := 0; e.pending(t) > 0; i++ {
			if i == 3 {
				t.Fatalf("%d messages left after 3 batches", e.pending(t))
			}
			if _, err := e.p.ProcessBatch(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		if seen.Load() == 0 {
			t.Fatal("the Report consumer never ran")
		}
		if got, min := time.UnixMilli(seen.Load()).Sub(c.Now()), time.Hour; got < min {
			t.Errorf("the Report message ran under a lease of %s; its timeout is %s", got, min)
		}
		if cs := e.p.Counters(); cs.Failed != 0 || cs.LeaseLost != 0 {
			t.Errorf("counters %+v: the late registration cost an attempt or a lease", cs)
		}
		var attempts int64
		e.db.Model(&am.PoisonedMessage{}).Count(&attempts)
		if attempts != 0 {
			t.Errorf("%d poisoned messages", attempts)
		}
	})
}
