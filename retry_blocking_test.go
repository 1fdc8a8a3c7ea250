package asyncmonolith_test

import (
	"context"
	"errors"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// A retry policy that blocks (it asks a service) holds up its own message only: another
// message of the same processor completes while the policy waits (the completer, which
// records every run's outcome, does not wait for the policy), and the blocked message is
// retried with the delay the policy chose once it returns.
func TestBlockingRetryPolicyHoldsUpOnlyItsMessage(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{ConsumerConcurrency: 2, DisableBreaker: true})
		asked, release := make(chan struct{}), make(chan struct{})
		policy := am.RetryPolicyFunc(func(am.MessageInfo, error) time.Duration {
			close(asked)
			<-release
			return 9 * time.Second
		})
		stuck := am.ConsumerFunc[Job](func(context.Context, *am.Message[Job]) error { return errors.New("down") })
		quick := am.ConsumerFunc[Job](func(ctx context.Context, _ *am.Message[Job]) error {
			select { // finish only once the other run's policy blocks
			case <-asked:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if err := am.Register[Job](e.p, stuck, am.WithName("Stuck"), am.WithRetryPolicy(policy), am.WithTimeout(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := am.Register[Job](e.p, quick, am.WithName("Quick"), am.WithTimeout(time.Hour)); err != nil {
			t.Fatal(err)
		}
		now := e.clock.Now()
		e.start(t)
		released := false
		t.Cleanup(func() { // before the processors stop
			if !released {
				close(release)
			}
		})
		produceRetryJobs(t, e, Job{N: 1}) // one message for each consumer
		recv(t, asked, "the retry policy is asked")
		eventually(t, func() bool { _, ok := rowsByConsumer(t, e)["Quick"]; return !ok },
			"the other message completes while the retry policy blocks")
		released = true
		close(release)
		eventually(t, func() bool { return rowsByConsumer(t, e)["Stuck"].Attempts == 1 }, "the failure is recorded once the policy returns")
		r, ok := rowsByConsumer(t, e)["Stuck"]
		if !ok || r.Attempts != 1 || r.AvailableAfter != now.Add(9*time.Second).UnixMilli() {
			t.Fatalf("the failed message: %+v (found %v), want 1 attempt, due at now+9s", r, ok)
		}
	})
}
