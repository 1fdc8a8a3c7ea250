package asyncmonolith_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// refuseRetriesOf makes the database refuse (a trigger, not a conflict) the write that
// reschedules a message whose error starts with prefix.
func refuseRetriesOf(t *testing.T, e *env, dialect, prefix string) {
	t.Helper()
	var stmts []string
	switch dialect {
	case "postgres":
		stmts = []string{`CREATE FUNCTION refuse_retry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'refused by the test'; END $$`,
			`CREATE TRIGGER refuse_retry BEFORE UPDATE ON consumer_messages
FOR EACH ROW WHEN (NEW.last_error LIKE '` + prefix + `%') EXECUTE FUNCTION refuse_retry()`}
	case "mysql":
		stmts = []string{`CREATE TRIGGER refuse_retry BEFORE UPDATE ON consumer_messages FOR EACH ROW
BEGIN IF NEW.last_error LIKE '` + prefix + `%' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test'; END IF; END`}
	default:
		stmts = []string{`CREATE TRIGGER refuse_retry BEFORE UPDATE ON consumer_messages
WHEN NEW.last_error LIKE '` + prefix + `%' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END`}
	}
	for _, s := range stmts {
		if err := e.db.Exec(s).Error; err != nil {
			t.Fatal(err)
		}
	}
}

// A failure whose retry the database refuses is set apart with the refusal as its error and
// the delay its retry policy chose, the policy asked once, by the run: the completer, which
// sets it apart, never asks it (a policy that blocks would hold up every outcome).
func TestRefusedRetryIsSetApartWithTheRunsDelay(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		var asked atomic.Int32
		policy := am.RetryPolicyFunc(func(am.MessageInfo, error) time.Duration {
			asked.Add(1)
			return 7 * time.Second
		})
		e := setup(t, dialect, am.Config{RetryPolicy: policy, AttemptDelay: time.Hour, DisableBreaker: true})
		if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(context.Context, *am.Message[Job]) error {
			return errors.New("refuse-me: down")
		}), am.WithName("Refused")); err != nil {
			t.Fatal(err)
		}
		refuseRetriesOf(t, e, dialect, "refuse-me")
		if err := am.ProduceNow(context.Background(), e.db, Job{N: 1}); err != nil {
			t.Fatal(err)
		}
		now := e.clock.Now()
		mustBatch(t, e)
		r, ok := rowsByConsumer(t, e)["Refused"]
		if !ok || r.Attempts != 1 || r.LastError == nil || !strings.Contains(*r.LastError, "refused this run's outcome") ||
			!strings.Contains(*r.LastError, "refused by the test") {
			t.Fatalf("the refused retry: %+v (found %v), want it set apart with the refusal, 1 attempt", r, ok)
		}
		if got, want := r.AvailableAfter, now.Add(7*time.Second).UnixMilli(); got != want {
			t.Fatalf("set apart due at now%+dms, want now+7s (the policy's delay)", got-now.UnixMilli())
		}
		if n := asked.Load(); n != 1 {
			t.Fatalf("the retry policy was asked %d times, want once (by the run)", n)
		}
	})
}
