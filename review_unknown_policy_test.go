package asyncmonolith_test

import (
	"context"
	"strings"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// A message of a consumer this process does not know (registered only in another process,
// as in a rolling deploy) fails its run with ErrUnknownConsumer and is retried by
// Config.RetryPolicy. A policy that blocks for it holds up that message only, as for any
// other failed run: the processor's other messages complete while it waits.
func TestReviewBlockingPolicyForAnUnknownConsumerHoldsUpOnlyItsMessage(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		asked, release := make(chan struct{}), make(chan struct{})
		policy := am.RetryPolicyFunc(func(m am.MessageInfo, _ error) time.Duration {
			if m.ConsumerType == "Ghost" {
				close(asked)
				<-release
			}
			return 9 * time.Second
		})
		e := setup(t, dialect, am.Config{ConsumerConcurrency: 2, DisableBreaker: true, RetryPolicy: policy})
		quick := am.ConsumerFunc[Job](func(ctx context.Context, _ *am.Message[Job]) error {
			select { // finish only once the policy blocks for the other message
			case <-asked:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if err := am.Register[Job](e.p, quick, am.WithName("Quick"), am.WithTimeout(time.Hour)); err != nil {
			t.Fatal(err)
		}
		now := e.clock.Now()
		pending := true
		ghost := am.ConsumerMessage{ID: "ghost-1", CreatedAt: now.UnixMilli() - 1, AvailableAfter: now.UnixMilli() - 1,
			ConsumerType: "Ghost", PayloadType: "Job", Payload: `{"n":1}`, InsertID: "ghost-1", Pending: &pending}
		if err := e.db.Create(&ghost).Error; err != nil {
			t.Fatal(err)
		}
		produceRetryJobs(t, e, Job{N: 2})
		e.start(t)
		released := false
		t.Cleanup(func() { // before the processors stop
			if !released {
				close(release)
			}
		})
		recv(t, asked, "the retry policy is asked for the unknown consumer's message")
		eventually(t, func() bool { _, ok := rowsByConsumer(t, e)["Quick"]; return !ok },
			"the other message completes while the retry policy blocks")
		released = true
		close(release)
		eventually(t, func() bool { return rowsByConsumer(t, e)["Ghost"].Attempts == 1 }, "the failure is recorded once the policy returns")
		r := rowsByConsumer(t, e)["Ghost"]
		if r.AvailableAfter != now.Add(9*time.Second).UnixMilli() || r.LastError == nil || !strings.Contains(*r.LastError, "Ghost") {
			t.Fatalf("the unknown consumer's message: %+v, want due at now+9s with an error naming the consumer", r)
		}
	})
}
