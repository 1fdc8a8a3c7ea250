package main

import (
	"context"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/asyncmonolithtest"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"gorm.io/gorm"
)

// The example's consumers, tested without processors, with the asyncmonolithtest helpers.
func TestConsumersWithHelpers(t *testing.T) {
	t.Parallel()
	for _, dialect := range testdb.Dialects {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			db := testdb.Open(t, dialect)
			a := &app{db: db, say: func(string, ...any) {}, failItem: "cursed amulet"}
			p := am.New(am.Config{})
			if err := db.Use(p); err != nil {
				t.Fatal(err)
			}
			if err := a.register(p); err != nil {
				t.Fatal(err)
			}
			if err := reset(context.Background(), db, p); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()

			// Cancelling an order produces OrderCancelled in its transaction, once per consumer.
			order := Order{Item: "teapot", Cents: 2500, Status: "placed"}
			db.Create(&order)
			tx := db.Begin()
			if err := am.Produce(tx, OrderCancelled{OrderID: order.ID, Item: order.Item, Cents: order.Cents}).Error; err != nil {
				t.Fatal(err)
			}
			got := asyncmonolithtest.RequireProduced[OrderCancelled](t, tx)
			if len(got) != 2 || got[0].Payload.OrderID != order.ID {
				t.Fatalf("produced %+v, want one message per consumer", got)
			}
			tx.Rollback()
			asyncmonolithtest.RequireNotProduced[OrderCancelled](t, db)

			// The refund is written through Message.Tx, and committed with it.
			if err := asyncmonolithtest.Run[OrderCancelled](ctx, db, IssueRefund{a}, OrderCancelled{OrderID: order.ID, Cents: 2500}); err != nil {
				t.Fatal(err)
			}
			var refund Refund
			if err := db.Take(&refund, "order_id = ?", order.ID).Error; err != nil || refund.Cents != 2500 {
				t.Fatalf("refund = %+v, %v", refund, err)
			}
			// The e-mail consumer fails for the cursed item.
			if err := asyncmonolithtest.Run[OrderCancelled](ctx, db, SendCancellationEmail{a}, OrderCancelled{Item: "cursed amulet"}); err == nil {
				t.Fatal("the cursed e-mail succeeded")
			}
			// A burst of page views leaves one pending aggregation.
			for range 3 {
				s := am.Produce(db, AggregateViews{ProductID: "kettle"}, am.InsertID("views:kettle"))
				if err := s.Create(&PageView{ProductID: "kettle"}).Error; err != nil {
					t.Fatal(err)
				}
			}
			if views := asyncmonolithtest.RequireProduced[AggregateViews](t, db); len(views) != 1 {
				t.Fatalf("%d aggregations pending, want 1", len(views))
			}
			if n, err := asyncmonolithtest.Drain(ctx, p); err != nil || n != 1 {
				t.Fatalf("drain: %d, %v", n, err)
			}
			var stats ProductStats
			db.Session(&gorm.Session{}).Take(&stats, "product_id = ?", "kettle")
			if stats.Views != 3 {
				t.Fatalf("views = %d, want 3", stats.Views)
			}
		})
	}
}
