package asyncmonolith_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
)

// Four requeues of the same poisoned messages at once (two operators, a double-clicked
// confirm button): one moves them all; the others find them gone (ErrMessageNotFound), not
// an insert id pending again (ErrRequeueConflict, which would say they were left poisoned).
// Each message is pending once and poisoned no more.
func TestRequeuePoisonedRacingItself(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		ctx := context.Background()
		var ids []string
		for i := range 50 {
			id := fmt.Sprintf("p%02d", i)
			ids = append(ids, id)
			if err := e.db.Create(&am.PoisonedMessage{ID: id, CreatedAt: 1, AvailableAfter: 1, ConsumerType: "C", PayloadType: "P",
				Payload: "{}", InsertID: "i" + id, LastError: "x", PoisonedAt: 1}).Error; err != nil {
				t.Fatal(err)
			}
		}
		const racers = 4
		moved := make([]int, racers)
		errs := make([]error, racers)
		var wg sync.WaitGroup
		for g := range racers {
			wg.Go(func() { moved[g], errs[g] = e.p.RequeuePoisoned(ctx, ids) })
		}
		wg.Wait()
		winners := 0
		for g := range racers {
			switch {
			case moved[g] == len(ids) && errs[g] == nil:
				winners++
			case moved[g] == 0 && errors.Is(errs[g], am.ErrMessageNotFound) && !errors.Is(errs[g], am.ErrRequeueConflict):
			default:
				t.Errorf("requeue %d: moved %d, %v", g, moved[g], errs[g])
			}
		}
		var pending, poisoned int64
		if err := errors.Join(e.db.Model(&am.ConsumerMessage{}).Count(&pending).Error,
			e.db.Model(&am.PoisonedMessage{}).Count(&poisoned).Error); err != nil {
			t.Fatal(err)
		}
		if winners != 1 || pending != int64(len(ids)) || poisoned != 0 {
			t.Fatalf("%d requeues moved everything; %d pending, %d poisoned, want 1, %d, 0", winners, pending, poisoned, len(ids))
		}
	})
}
