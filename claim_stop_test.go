package asyncmonolith_test

import (
	"context"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
)

// A hard stop (the Start context cancelled) while a claim's statement runs on the server
// must not leave the claimed messages leased to no one. A claim now runs to its end and
// the stopped runs hand its messages back; before, the claim was cancelled with the
// context, and a statement the server had received but not yet begun (or had committed
// but not yet answered) left its messages leased until their leases ended
// (TestStartAgainAfterCancelledStart caught it about once in 15 runs under load). Here a
// trigger makes the claim's UPDATE take a while on the server; the processors are
// hard-stopped meanwhile and started again. The test clock never moves, so a message left
// leased would never be due again: it must be consumed by the new processors, as attempt 1.
func TestHardStopDuringAClaimLeavesNoMessageLeased(t *testing.T) {
	t.Parallel()
	e := setup(t, "postgres", am.Config{})
	if err := e.db.Exec(`CREATE FUNCTION slow_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.5); RETURN NEW; END $$`).Error; err != nil {
		t.Fatal(err)
	}
	if err := e.db.Exec(`CREATE TRIGGER slow_claim BEFORE UPDATE ON consumer_messages
FOR EACH ROW WHEN (NEW.pending IS NULL AND OLD.pending) EXECUTE FUNCTION slow_claim()`).Error; err != nil {
		t.Fatal(err)
	}
	r := &recorder[Job]{}
	if err := am.Register[Job](e.p, am.ConsumerFunc[Job](r.Consume)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := e.p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := am.ProduceNow(context.Background(), e.db, Job{N: 1}); err != nil {
		t.Fatal(err)
	}
	var schema string
	e.db.Raw("SELECT current_schema()").Scan(&schema)
	eventually(t, func() bool { // the claim's UPDATE is sleeping in the trigger
		var n int64
		e.db.Raw(`SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE '%consumer_messages%'
AND pid IN (SELECT pid FROM pg_stat_activity WHERE datname = current_database())`).Scan(&n)
		return n > 0
	}, "the claim is running on the server")
	cancel() // hard stop with the claim in flight
	if err := e.p.Start(context.Background()); err != nil {
		t.Fatalf("Start after the hard stop: %v", err)
	}
	t.Cleanup(func() { _ = e.p.Stop(context.Background()) })
	eventually(t, func() bool { return r.count() >= 1 }, "the message claimed during the hard stop was consumed")
	if got := r.messages()[0].Attempt; got != 1 {
		t.Fatalf("the message ran as attempt %d, want 1: a hard stop counts no attempt", got)
	}
}
