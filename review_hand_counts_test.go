package asyncmonolith_test

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// Rows written by hand with attempts past the consumer's limit — up to the column's
// largest value — run once more as their last attempt: the consumer sees a positive
// attempt at or past its MaxAttempts, and a failure poisons the message instead of
// starting its attempts over. A snooze count at the column's largest value is past any
// bound: the snooze is a failed attempt, and the count is not wrapped around.
func TestReviewHandWrittenCountsAtTheirLimits(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{MaxAttempts: 5, DisableBreaker: true})
		var mu sync.Mutex
		seen := map[string]am.MessageInfo{}
		if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(_ context.Context, m *am.Message[Job]) error {
			mu.Lock()
			seen[m.ID] = am.MessageInfo{Attempt: m.Attempt, MaxAttempts: m.MaxAttempts, Snoozes: m.Snoozes}
			mu.Unlock()
			if m.Payload.N == 3 {
				return am.SnoozeFor(time.Minute)
			}
			return errors.New("still failing")
		}), am.WithName("Hand")); err != nil {
			t.Fatal(err)
		}
		now := e.clock.Now().UnixMilli()
		yes := true
		rows := []am.ConsumerMessage{
			{ID: "over", Attempts: 1000, Payload: `{"n":1}`},
			{ID: "max", Attempts: math.MaxInt64, Payload: `{"n":2}`},
			{ID: "snoozed-max", Attempts: 1, Snoozes: math.MaxInt64, Payload: `{"n":3}`},
		}
		for i := range rows {
			r := &rows[i]
			r.CreatedAt, r.AvailableAfter, r.ConsumerType, r.PayloadType, r.InsertID, r.Pending = now-1, now-1, "Hand", "Job", r.ID, &yes
			if err := e.db.Create(r).Error; err != nil {
				t.Fatal(err)
			}
		}
		mustBatch(t, e)
		mu.Lock()
		defer mu.Unlock()
		for _, id := range []string{"over", "max"} {
			if m := seen[id]; m.Attempt < 5 {
				t.Errorf("%s: the consumer saw attempt %d of %d, want its last (at least 5)", id, m.Attempt, m.MaxAttempts)
			}
			if n := e.count(t, &am.PoisonedMessage{}, "id = ?", id); n != 1 {
				t.Errorf("%s: failed past its last attempt but not poisoned (rows %+v)", id, rowsByPayload(t, e))
			}
		}
		var r am.ConsumerMessage
		if err := e.db.Where("id = ?", "snoozed-max").Take(&r).Error; err != nil {
			t.Fatal(err)
		}
		if r.Snoozes != math.MaxInt64 || r.Attempts != 2 {
			t.Errorf("snoozed-max: %+v, want its snooze refused (2 attempts) and its count kept", r)
		}
	})
}
