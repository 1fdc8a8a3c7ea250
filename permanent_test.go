package asyncmonolith_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

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
