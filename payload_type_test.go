package asyncmonolith_test

import (
	"context"
	"errors"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

// ValueNamed names itself with a value receiver, which a nil *ValueNamed cannot call.
type ValueNamed struct{ N int }

func (ValueNamed) PayloadType() string { return "value-named.v1" }

// PointerNamed names itself with a pointer receiver.
type PointerNamed struct{ N int }

func (*PointerNamed) PayloadType() string { return "pointer-named.v1" }

// valueConsumer consumes with a value receiver, which a nil *valueConsumer cannot call.
type valueConsumer struct{}

func (valueConsumer) Consume(context.Context, *am.Message[OrderCancelled]) error { return nil }

// TestPayloadTypeOfAnotherPackageIsRefused: a payload type with the Go name of a registered
// one (as two packages' OrderCancelled have) is refused by Produce, ProduceBatch and
// ProduceNow with ErrInvalidName instead of being delivered to the other type's consumers.
func TestPayloadTypeOfAnotherPackageIsRefused(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		registerBoth(t, e)
		ctx := context.Background()
		// The registered type, by value or by pointer, is accepted.
		if err := am.ProduceNow(ctx, e.db, &OrderCancelled{OrderID: "p"}); err != nil {
			t.Fatal(err)
		}
		type OrderCancelled struct{ Reason int } // another type of the same Go name
		if err := am.Register[OrderCancelled](e.p, am.ConsumerFunc[OrderCancelled](func(context.Context, *am.Message[OrderCancelled]) error { return nil }), am.WithName("Other")); !errors.Is(err, am.ErrInvalidName) {
			t.Fatalf("Register of the second OrderCancelled: err = %v, want ErrInvalidName", err)
		}
		errs := map[string]error{
			"Produce":      am.Produce(e.db, OrderCancelled{Reason: 1}).Create(&Order{ID: "1"}).Error,
			"ProduceBatch": e.db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, []OrderCancelled{{}}).Error }),
			"ProduceNow":   am.ProduceNow(ctx, e.db, OrderCancelled{Reason: 2}),
			"ProduceTx":    e.db.Transaction(func(tx *gorm.DB) error { return am.ProduceTx(t.Context(), tx, &OrderCancelled{}) }),
		}
		for call, err := range errs {
			if !errors.Is(err, am.ErrInvalidName) {
				t.Errorf("%s of the second OrderCancelled: err = %v, want ErrInvalidName", call, err)
			}
		}
		if got := e.pending(t); got != 2 {
			t.Fatalf("%d messages, want the 2 of the registered type (none of the other)", got)
		}
	})
}

// TestPayloadTypeMethodThroughAPointer: a PayloadType() with a value receiver, reached
// through a pointer (nil included), names the payload without panicking in PayloadTypeOf,
// Register[*T], Produce and ProduceNow; a nil pointer payload is refused with
// ErrInvalidPayload, and a nil consumer with ErrInvalidOption.
func TestPayloadTypeMethodThroughAPointer(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		v    any
		want string
	}{
		{ValueNamed{}, "value-named.v1"},
		{&ValueNamed{}, "value-named.v1"},
		{(*ValueNamed)(nil), "value-named.v1"},
		{&PointerNamed{}, "pointer-named.v1"},
		{(*PointerNamed)(nil), "pointer-named.v1"},
		{PointerNamed{}, "PointerNamed"}, // the value's method set lacks the pointer method
	} {
		got, err := am.PayloadTypeOf(c.v)
		if err != nil || got != c.want {
			t.Errorf("PayloadTypeOf(%#v) = %q, %v; want %q", c.v, got, err, c.want)
		}
	}
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		rec := &recorder[*ValueNamed]{}
		if err := am.Register[*ValueNamed](e.p, rec, am.WithName("Named")); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := am.ProduceNow(ctx, e.db, &ValueNamed{N: 1}); err != nil {
			t.Fatal(err)
		}
		if err := am.ProduceNow(ctx, e.db, ValueNamed{N: 2}); err != nil {
			t.Fatal(err)
		}
		if err := am.ProduceNow(ctx, e.db, (*ValueNamed)(nil)); !errors.Is(err, am.ErrInvalidPayload) {
			t.Fatalf("ProduceNow of a nil pointer: err = %v, want ErrInvalidPayload", err)
		}
		if err := am.Produce(e.db, (*ValueNamed)(nil)).Error; !errors.Is(err, am.ErrInvalidPayload) {
			t.Fatalf("Produce of a nil pointer: err = %v, want ErrInvalidPayload", err)
		}
		var names []string
		e.db.Model(&am.ConsumerMessage{}).Distinct("payload_type").Pluck("payload_type", &names)
		if len(names) != 1 || names[0] != "value-named.v1" {
			t.Fatalf("stored payload types %v, want [value-named.v1]", names)
		}
		mustBatch(t, e)
		if rec.count() != 2 || rec.messages()[0].Payload == nil {
			t.Fatalf("consumer of *ValueNamed ran %d times", rec.count())
		}
		if err := am.Register[OrderCancelled](e.p, (*valueConsumer)(nil)); !errors.Is(err, am.ErrInvalidOption) {
			t.Fatalf("Register of a nil consumer with a value receiver: err = %v, want ErrInvalidOption", err)
		}
		if err := am.Register[OrderCancelled](e.p, nil); !errors.Is(err, am.ErrInvalidOption) {
			t.Fatalf("Register of a nil consumer: err = %v, want ErrInvalidOption", err)
		}
	})
}
