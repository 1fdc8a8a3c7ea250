package asyncmonolith_test

import (
	"context"
	"fmt"

	am "github.com/asyncmonolith/asyncmonolith"
)

// A guarded update announces its change only when it made it: an Update that matched no
// row writes no message and leaves it buffered, for Discard (or Flush) to settle.
func ExampleDiscard() {
	db, p, done := exampleDB()
	defer done()
	if err := am.Register[PaymentFailed](p, NotifyCustomer{}); err != nil {
		panic(err)
	}
	db.Create(&Payment{ID: "p1", Status: "pending"})
	for range 2 {
		s := am.Produce(db, PaymentFailed{PaymentID: "p1"})
		res := s.Model(&Payment{}).Where("id = ? AND status = ?", "p1", "pending").Update("status", "failed")
		if res.Error != nil {
			panic(res.Error)
		}
		if res.RowsAffected == 0 {
			fmt.Println("already failed; discarded", am.Discard(s), "message")
			continue
		}
		fmt.Println("failed; messages buffered:", am.Pending(s))
	}
	if _, err := p.ProcessBatch(context.Background()); err != nil {
		panic(err)
	}
	// Output:
	// failed; messages buffered: 0
	// already failed; discarded 1 message
	// notify customer: payment p1 failed (attempt 1)
}
