package asyncmonolith_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
)

// distinctIDs differ only in case, a trailing space or an accent: a case-insensitive,
// PAD SPACE or accent-insensitive comparison (MariaDB's default utf8mb4_general_ci is all
// three) would take each group for one id.
var distinctIDs = []string{"Order:42", "order:42", "order:42 ", "ORDER:42", "cafe:1", "café:1", "Straße:1", "Strase:1"}

func TestIdsAndNamesCompareExactly(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{MaxAttempts: 1, DisableBreaker: true})
		ctx := context.Background()
		upper, lower := &recorder[OrderCancelled]{}, &recorder[OrderCancelled]{}
		lower.fn = func(context.Context, *am.Message[OrderCancelled]) error { return errors.New("audit failed") }
		if err := am.Register[OrderCancelled](e.p, am.ConsumerFunc[OrderCancelled](upper.Consume), am.WithName("Audit")); err != nil {
			t.Fatal(err)
		}
		if err := am.Register[OrderCancelled](e.p, am.ConsumerFunc[OrderCancelled](lower.Consume), am.WithName("audit")); err != nil {
			t.Fatal(err)
		}
		for _, id := range distinctIDs {
			if err := am.ProduceNow(ctx, e.db, OrderCancelled{OrderID: id}, am.InsertID(id)); err != nil {
				t.Fatalf("produce %q: %v", id, err)
			}
		}
		if got, want := e.pending(t), int64(2*len(distinctIDs)); got != want {
			t.Fatalf("%d pending rows, want %d (one per insert id and consumer)", got, want)
		}
		// A pending id is still deduplicated exactly.
		if err := am.ProduceNow(ctx, e.db, OrderCancelled{OrderID: "again"}, am.InsertID("order:42 ")); err != nil {
			t.Fatal(err)
		}
		if got, want := e.pending(t), int64(2*len(distinctIDs)); got != want {
			t.Fatalf("a duplicate of a pending insert id was written: %d rows, want %d", got, want)
		}
		for e.pending(t) > 0 {
			mustBatch(t, e)
		}
		for name, r := range map[string]*recorder[OrderCancelled]{"Audit": upper, "audit": lower} {
			var got []string
			for _, m := range r.messages() {
				if m.ConsumerType != name {
					t.Fatalf("%s received a message of %q", name, m.ConsumerType)
				}
				if m.InsertID != m.Payload.OrderID {
					t.Fatalf("%s: insert id read back as %q, produced as %q", name, m.InsertID, m.Payload.OrderID)
				}
				got = append(got, m.InsertID)
			}
			want := slices.Clone(distinctIDs)
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("%s consumed %q, want %q", name, got, want)
			}
		}
		// Every message of "audit" was poisoned; the filter by consumer type is exact too.
		poisoned, err := e.p.ListPoisoned(ctx, am.MessageFilter{ConsumerType: "Audit"})
		if err != nil || len(poisoned) != 0 {
			t.Fatalf("poisoned of Audit: %d, %v (want none: only audit failed)", len(poisoned), err)
		}
		poisoned, err = e.p.ListPoisoned(ctx, am.MessageFilter{ConsumerType: "audit"})
		if err != nil || len(poisoned) != len(distinctIDs) {
			t.Fatalf("poisoned of audit: %d, %v, want %d", len(poisoned), err, len(distinctIDs))
		}
		if _, err := e.p.GetPoisoned(ctx, poisoned[0].ID+" "); err == nil {
			t.Fatalf("GetPoisoned found %q under the id with a trailing space", poisoned[0].ID)
		}
		// Schedule tags compare exactly.
		for _, tag := range []string{"Reports", "reports", "reports "} {
			if _, err := am.Schedule(t.Context(), e.db, OrderCancelled{OrderID: tag}, "@daily", am.Tag(tag)); err != nil {
				t.Fatal(err)
			}
		}
		n, err := am.DeleteSchedulesByTag(t.Context(), e.db, "reports")
		if err != nil || n != 1 {
			t.Fatalf("DeleteSchedulesByTag(reports) removed %d, %v, want 1", n, err)
		}
		left, err := e.p.ListSchedules(ctx, "")
		if err != nil || len(left) != 2 {
			t.Fatalf("%d schedules left, %v, want 2", len(left), err)
		}
	})
}
