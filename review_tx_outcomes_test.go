package asyncmonolith_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// What a consumer writes and produces through Message.Tx is rolled back when it returns
// Permanent(err), a snooze, a snooze joined with a permanent error, or a snooze refused by
// its bound (a failed attempt), under ProcessBatch and under started processors: no row,
// no follow-up message. The outcome is still recorded (poisoned, snoozed or retried).
func TestReviewMessageTxRollsBackOnPermanentAndSnooze(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		for _, started := range []bool{false, true} {
			e := setup(t, dialect, am.Config{MaxSnoozes: 1, DisableBreaker: true})
			if err := e.db.AutoMigrate(&Audit{}); err != nil {
				t.Fatal(err)
			}
			outcomes := []func() error{
				func() error { return am.Permanent(errors.New("never")) },
				func() error { return am.SnoozeFor(time.Hour) },
				func() error { return errors.Join(am.SnoozeFor(time.Hour), am.Permanent(errors.New("bad"))) },
				func() error { return fmt.Errorf("wrapped: %w", am.SnoozeUntil(time.Now().Add(time.Hour))) },
			}
			followUps := &recorder[OrderCancelled]{}
			if err := am.Register[OrderCancelled](e.p, followUps, am.WithName("FollowUp")); err != nil {
				t.Fatal(err)
			}
			if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
				if err := m.Tx.Create(&Audit{Msg: fmt.Sprint(m.Payload.N)}).Error; err != nil {
					return err
				}
				if err := am.ProduceNow(ctx, m.Tx, OrderCancelled{OrderID: fmt.Sprint(m.Payload.N)}); err != nil {
					return err
				}
				return outcomes[m.Payload.N%len(outcomes)]()
			}), am.WithName("Writer")); err != nil {
				t.Fatal(err)
			}
			jobs := make([]Job, len(outcomes))
			for i := range jobs {
				jobs[i].N = i
			}
			produceRetryJobs(t, e, jobs...)
			// A message already snoozed its most: its snooze is a failed attempt.
			if err := e.db.Model(&am.ConsumerMessage{}).Where("payload = ?", `{"n":3}`).Update("snoozes", 1).Error; err != nil {
				t.Fatal(err)
			}
			if started {
				e.start(t)
				eventually(t, func() bool {
					cs := e.p.Counters()
					return cs.Failed+cs.Snoozed == uint64(len(outcomes))
				}, "every outcome recorded")
			} else {
				mustBatch(t, e)
			}
			if n := e.count(t, &Audit{}); n != 0 {
				t.Errorf("started=%v: %d Message.Tx rows committed, want 0", started, n)
			}
			if n := e.count(t, &am.ConsumerMessage{}, "consumer_type = ?", "FollowUp"); n != 0 || followUps.count() != 0 {
				t.Errorf("started=%v: %d follow-up messages stored, %d run; want 0", started, n, followUps.count())
			}
			rows := rowsByPayload(t, e)
			if r := rows[`{"n":1}`]; r.Snoozes != 1 || r.Attempts != 0 {
				t.Errorf("started=%v: the snoozed message: %+v, want 1 snooze, 0 attempts", started, r)
			}
			if r := rows[`{"n":3}`]; r.Snoozes != 1 || r.Attempts != 1 {
				t.Errorf("started=%v: the message over its snooze bound: %+v, want 1 snooze, 1 attempt", started, r)
			}
			if n := e.count(t, &am.PoisonedMessage{}); n != 2 {
				t.Errorf("started=%v: %d poisoned, want 2 (the permanent ones)", started, n)
			}
		}
	})
}
