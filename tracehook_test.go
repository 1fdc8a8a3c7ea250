package asyncmonolith_test

import (
	"context"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

type traceIDsKey struct{}

// A TraceContext hook that hands back what a hostile traceparent held (invalid UTF-8,
// too long, not hex) records no trace on the message, on every database, instead of
// failing the produce; well-formed W3C ids are recorded.
func TestTraceContextHookGarbageRecordsNone(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{Hooks: am.Hooks{TraceContext: func(ctx context.Context) (string, string) {
			ids, _ := ctx.Value(traceIDsKey{}).([2]string)
			return ids[0], ids[1]
		}}})
		registerBoth(t, e)
		const trace, span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
		cases := map[string][2]string{
			"1": {trace, span},
			"2": {"zz", "\xff"},
			"3": {trace + "0000", span},
			"4": {"4BF92F3577B34DA6A3CE929D0E0E4736", span},
			"5": {trace, "00f067aa0ba902b\x00"},
		}
		for order, ids := range cases {
			ctx := context.WithValue(context.Background(), traceIDsKey{}, ids)
			if err := e.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
				return am.ProduceTx(ctx, tx, OrderCancelled{OrderID: order})
			}); err != nil {
				t.Fatalf("order %s with trace ids %q: %v", order, ids, err)
			}
		}
		var rows []am.ConsumerMessage
		if err := e.db.Find(&rows).Error; err != nil {
			t.Fatal(err)
		}
		traced := 0
		for _, r := range rows {
			if r.TraceID != nil {
				traced++
				if *r.TraceID != trace || r.SpanID == nil || *r.SpanID != span {
					t.Errorf("recorded trace %v/%v", *r.TraceID, r.SpanID)
				}
			}
		}
		if len(rows) != 10 || traced != 2 {
			t.Fatalf("%d rows, %d with a trace; want 10 rows (2 consumers), only order 1's 2 traced", len(rows), traced)
		}
	})
}
