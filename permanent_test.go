package asyncmonolith_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

// A consumer error wrapping ErrPermanent poisons the message on its first run, with the
// reason, and does not trip the breaker: messages behind it still run.
func TestPermanentErrorPoisonsAtOnce(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{MaxAttempts: 5, BreakerFailures: 2, ConsumerConcurrency: 1})
		c := &recorder[Job]{fn: func(_ context.Context, m *am.Message[Job]) error {
			if m.Payload.N < 3 {
				return fmt.Errorf("subject %q is invalid: %w", "a b", am.ErrPermanent)
			}
			return nil
		}}
		if err := am.Register[Job](e.p, c); err != nil {
			t.Fatal(err)
		}
		jobs := []Job{{N: 0}, {N: 1}, {N: 2}, {N: 3}, {N: 4}}
		if err := e.db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, jobs).Error }); err != nil {
			t.Fatal(err)
		}
		mustBatch(t, e)
		if c.count() != 5 {
			t.Fatalf("consumer ran %d times, want 5: three permanent failures in a row must not trip the breaker (BreakerFailures 2)", c.count())
		}
		if n := e.pending(t); n != 0 {
			t.Fatalf("%d messages pending, want 0 (permanent failures are not retried)", n)
		}
		poisoned, err := e.p.ListPoisoned(context.Background(), am.MessageFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(poisoned) != 3 {
			t.Fatalf("%d poisoned, want 3", len(poisoned))
		}
		for _, p := range poisoned {
			if p.Attempts != 1 || !strings.Contains(p.LastError, `subject "a b" is invalid`) {
				t.Fatalf("poisoned after %d attempts with reason %q; want 1 attempt and the consumer's reason", p.Attempts, p.LastError)
			}
		}
		if paused := e.p.Paused(); len(paused) != 0 {
			t.Fatalf("paused %v, want none", paused)
		}
	})
}

// ErrPermanent is found however it is wrapped: several levels deep, inside errors.Join,
// and beside the consumer's timeout (a consumer that gave up when its context ended and
// said so permanently): each message is poisoned on its first run with its reason.
func TestPermanentErrorWrappedJoinedOrTimedOut(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{MaxAttempts: 5, BreakerFailures: 2})
		c := &recorder[Job]{fn: func(ctx context.Context, m *am.Message[Job]) error {
			switch m.Payload.N {
			case 0:
				return fmt.Errorf("outer: %w", fmt.Errorf("middle: %w", fmt.Errorf("inner-reason: %w", am.ErrPermanent)))
			case 1:
				return errors.Join(errors.New("joined-reason"), am.ErrPermanent)
			default:
				<-ctx.Done()
				return fmt.Errorf("timeout-reason: %w: %w", ctx.Err(), am.ErrPermanent)
			}
		}}
		if err := am.Register[Job](e.p, c, am.WithTimeout(200*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if err := e.db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, []Job{{N: 0}, {N: 1}, {N: 2}}).Error }); err != nil {
			t.Fatal(err)
		}
		wait := e.batchAsync(t)
		// Once the two that fail at once have ended, the third's timeout is the clock's
		// only timer: advancing it ends the third's context.
		e.advanceWhenTimers(t, 1, 200*time.Millisecond, func() bool { return c.count() == 3 })
		wait()
		if n := e.pending(t); n != 0 {
			t.Fatalf("%d messages pending, want 0 (permanent failures are not retried)", n)
		}
		poisoned, err := e.p.ListPoisoned(context.Background(), am.MessageFilter{})
		if err != nil {
			t.Fatal(err)
		}
		reasons := map[string]bool{"inner-reason": false, "joined-reason": false, "timeout-reason": false}
		for _, p := range poisoned {
			for r := range reasons {
				if strings.Contains(p.LastError, r) && p.Attempts == 1 {
					reasons[r] = true
				}
			}
			if strings.Contains(p.LastError, "timeout-reason") && !strings.Contains(p.LastError, "timed out") {
				t.Errorf("timed-out permanent failure's reason %q does not say it timed out", p.LastError)
			}
		}
		for r, ok := range reasons {
			if !ok {
				t.Errorf("no message poisoned on its first run with %q (poisoned: %+v)", r, poisoned)
			}
		}
		if paused := e.p.Paused(); len(paused) != 0 {
			t.Fatalf("paused %v, want none", paused)
		}
	})
}
