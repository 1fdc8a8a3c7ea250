package asyncmonolith_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/asyncmonolithtest"
	"gorm.io/gorm"
)

// ExponentialBackoff doubles the delay with each failed run up to its cap. Its jitter
// takes up to Jitter of each delay off, as a pure function of the message id and the
// attempt, so that messages that failed together come back spread out.
func ExampleExponentialBackoff() {
	exact := am.ExponentialBackoff{Base: time.Second, Max: 10 * time.Second, NoJitter: true}
	jittered := am.ExponentialBackoff{Base: time.Second, Max: 10 * time.Second} // Jitter 0.25 by default
	for attempt := 1; attempt <= 5; attempt++ {
		d := exact.RetryDelay(am.MessageInfo{ID: "m1", Attempt: attempt}, nil)
		j := jittered.RetryDelay(am.MessageInfo{ID: "m1", Attempt: attempt}, nil)
		fmt.Printf("after run %d: %s (jittered: within [%s, %s]: %v)\n", attempt, d, d*3/4, d, j >= d*3/4 && j <= d)
	}
	// For every consumer: am.New(am.Config{RetryPolicy: jittered}).
	// Output:
	// after run 1: 1s (jittered: within [750ms, 1s]: true)
	// after run 2: 2s (jittered: within [1.5s, 2s]: true)
	// after run 3: 4s (jittered: within [3s, 4s]: true)
	// after run 4: 8s (jittered: within [6s, 8s]: true)
	// after run 5: 10s (jittered: within [7.5s, 10s]: true)
}

// errRateLimited is what a client returns when the remote service says "slow down".
var errRateLimited = errors.New("rate limited")

// A consumer's own retry policy, of the attempt and the error: a rate-limited call waits a
// minute per attempt, anything else the fixed 5 seconds.
func ExampleWithRetryPolicy() {
	clock := asyncmonolithtest.NewClock(time.Date(2026, 1, 5, 12, 0, 0, 0, time.UTC))
	db, p, cleanup := exampleDBWith(am.Config{Clock: clock, Logger: slog.New(slog.DiscardHandler)})
	defer cleanup()
	policy := am.RetryPolicyFunc(func(m am.MessageInfo, err error) time.Duration {
		if errors.Is(err, errRateLimited) {
			return time.Duration(m.Attempt) * time.Minute
		}
		return 5 * time.Second
	})
	err := am.Register[PaymentFailed](p, am.ConsumerFunc[PaymentFailed](func(ctx context.Context, m *am.Message[PaymentFailed]) error {
		return fmt.Errorf("send e-mail: %w", errRateLimited)
	}), am.WithRetryPolicy(policy))
	if err != nil {
		panic(err)
	}
	if err := db.Transaction(func(tx *gorm.DB) error { return am.Produce(tx, PaymentFailed{PaymentID: "p1"}).Error }); err != nil {
		panic(err)
	}
	for range 2 {
		if _, err := p.ProcessBatch(context.Background()); err != nil {
			panic(err)
		}
		var m am.ConsumerMessage
		db.Take(&m)
		fmt.Printf("attempts %d, due again in %s\n", m.Attempts, m.Due().Sub(clock.Now()))
		clock.Set(m.Due())
	}
	// Output:
	// attempts 1, due again in 1m0s
	// attempts 2, due again in 2m0s
}

// A consumer that finds its message not ready yet (a payment still being settled) snoozes
// it: the message runs again later without using an attempt. Snoozes are bounded by
// Config.MaxSnoozes (or WithMaxSnoozes); Message.Snoozes counts them.
func ExampleSnoozeFor() {
	clock := asyncmonolithtest.NewClock(time.Date(2026, 1, 5, 12, 0, 0, 0, time.UTC))
	db, p, cleanup := exampleDBWith(am.Config{Clock: clock})
	defer cleanup()
	settled := false
	err := am.Register[PaymentFailed](p, am.ConsumerFunc[PaymentFailed](func(ctx context.Context, m *am.Message[PaymentFailed]) error {
		fmt.Printf("run: attempt %d, snoozed %d times\n", m.Attempt, m.Snoozes)
		if !settled {
			return am.SnoozeFor(30 * time.Second)
		}
		return nil
	}))
	if err != nil {
		panic(err)
	}
	if err := db.Transaction(func(tx *gorm.DB) error { return am.Produce(tx, PaymentFailed{PaymentID: "p1"}).Error }); err != nil {
		panic(err)
	}
	p.ProcessBatch(context.Background())
	var m am.ConsumerMessage
	db.Take(&m)
	fmt.Printf("snoozed: due again in %s, attempts used %d\n", m.Due().Sub(clock.Now()), m.Attempts)
	clock.Advance(30 * time.Second)
	settled = true
	p.ProcessBatch(context.Background())
	fmt.Println("pending:", pendingCount(db), "snoozed runs:", p.Counters().Snoozed)
	// Output:
	// run: attempt 1, snoozed 0 times
	// snoozed: due again in 30s, attempts used 0
	// run: attempt 1, snoozed 1 times
	// pending: 0 snoozed runs: 1
}

// A payload that can never be handled is poisoned at once with its reason, instead of
// using up its attempts: return Permanent(err) (or an error wrapping ErrPermanent).
func ExamplePermanent() {
	db, p, cleanup := exampleDBWith(am.Config{MaxAttempts: 5, Logger: slog.New(slog.DiscardHandler)})
	defer cleanup()
	err := am.Register[PaymentFailed](p, am.ConsumerFunc[PaymentFailed](func(ctx context.Context, m *am.Message[PaymentFailed]) error {
		if m.Payload.PaymentID == "" {
			return am.Permanent(errors.New("payment id is empty"))
		}
		return nil
	}))
	if err != nil {
		panic(err)
	}
	if err := db.Transaction(func(tx *gorm.DB) error { return am.Produce(tx, PaymentFailed{}).Error }); err != nil {
		panic(err)
	}
	p.ProcessBatch(context.Background())
	poisoned, _ := p.ListPoisoned(context.Background(), am.MessageFilter{})
	fmt.Printf("poisoned after %d attempt: %s\n", poisoned[0].Attempts, poisoned[0].LastError)
	// Output: poisoned after 1 attempt: asyncmonolith: permanent failure, not retried: payment id is empty
}
