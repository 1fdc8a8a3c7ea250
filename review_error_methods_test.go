package asyncmonolith_test

import (
	"context"
	"strings"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
)

// Error types written the usual way, with methods that read their receiver: a nil pointer
// of each in a non-nil error panics in its Unwrap, Is or As.
type (
	unwrapErr struct{ cause error }
	isErr     struct{ permanent bool }
	asErr     struct{ code int }
)

func (e *unwrapErr) Error() string { return "unwrap" }
func (e *unwrapErr) Unwrap() error { return e.cause }

func (e *isErr) Error() string { return "is" }

// Is panics only when asked about ErrPermanent, as a method that reads a field for one
// target does.
func (e *isErr) Is(target error) bool { return target == am.ErrPermanent && e.permanent }

func (e *asErr) Error() string { return "as" }
func (e *asErr) As(any) bool   { return e.code == 1 }
func (e *asErr) Unwrap() error { return nil }

// A consumer that returns a typed nil of an error type whose Unwrap, Is or As reads its
// receiver fails its run like any other error (here its only attempt, so the message is
// poisoned), with a reason naming the error's type; the process does not crash where the
// engine asks the error what it is (a timeout, a panic, permanent, a snooze).
func TestReviewConsumerErrorWhoseMethodsPanic(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{MaxAttempts: 1})
		if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
			switch m.Payload.N {
			case 0:
				var err *unwrapErr
				return err
			case 1:
				var err *isErr
				return err
			default:
				var err *asErr
				return err
			}
		}), am.WithName("TypedNilMethods")); err != nil {
			t.Fatal(err)
		}
		produceRetryJobs(t, e, Job{N: 0}, Job{N: 1}, Job{N: 2})
		if _, err := e.p.ProcessBatch(context.Background()); err != nil {
			t.Fatal(err)
		}
		poisoned, err := e.p.ListPoisoned(context.Background(), am.MessageFilter{})
		if err != nil || len(poisoned) != 3 {
			t.Fatalf("poisoned %+v, %v: want the 3 messages", poisoned, err)
		}
		found := map[string]bool{}
		for _, p := range poisoned {
			for _, typ := range []string{"*asyncmonolith_test.unwrapErr", "*asyncmonolith_test.isErr", "*asyncmonolith_test.asErr"} {
				if strings.Contains(p.LastError, typ) && strings.Contains(p.LastError, "panicked") {
					found[typ] = true
				}
			}
		}
		if len(found) != 3 {
			t.Fatalf("poisoned with %+v: want each reason to name its error's type and the panic", poisoned)
		}
	})
}
