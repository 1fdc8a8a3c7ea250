package asyncmonolith_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

type railFiltered struct{ N int }

// TestMessageFilterRail: MessageFilter.Rail keeps the messages of one rail (the default
// one included) in every listing, keyset walk, count and purge, and nothing of the others.
func TestMessageFilterRail(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{Rails: map[string]am.RailConfig{"slow": {}}})
		nop := am.ConsumerFunc[railFiltered](func(context.Context, *am.Message[railFiltered]) error { return nil })
		if err := am.Register(e.p, nop, am.WithName("Fast")); err != nil {
			t.Fatal(err)
		}
		if err := am.Register(e.p, nop, am.WithName("Slow"), am.WithRail("slow")); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		for i := range 5 {
			if err := am.ProduceNow(ctx, e.db, railFiltered{N: i}); err != nil {
				t.Fatal(err)
			}
		}
		old := e.clock.Now().Add(-time.Hour).UnixMilli()
		for i, rail := range []string{"", "slow", "slow"} {
			id := fmt.Sprintf("poisoned-%d", i)
			if err := e.db.Create(&am.PoisonedMessage{ID: id, CreatedAt: old, AvailableAfter: old, ConsumerType: "Fast", PayloadType: "railFiltered",
				Payload: "{}", InsertID: id, LastError: "boom", PoisonedAt: old, Rail: rail}).Error; err != nil {
				t.Fatal(err)
			}
		}
		rail := func(s string) *string { return &s }

		for _, want := range []struct {
			rail     string
			consumer string
		}{{"", "Fast"}, {"slow", "Slow"}} {
			var ids []string
			cursor := ""
			for pages := 0; ; pages++ {
				pg, err := e.p.PageMessages(ctx, am.MessageFilter{Rail: rail(want.rail), Limit: 2}, cursor)
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range pg.Rows {
					if m.Rail != want.rail || m.ConsumerType != want.consumer {
						t.Fatalf("rail %q page: %+v", want.rail, m)
					}
					ids = append(ids, m.ID)
				}
				if cursor = pg.Next; cursor == "" {
					break
				}
				if pages > 5 {
					t.Fatal("walk does not end")
				}
			}
			slices.Sort(ids)
			if len(slices.Compact(ids)) != 5 || len(ids) != 5 {
				t.Fatalf("rail %q walk: %v, want its 5 messages once each", want.rail, ids)
			}
			list, err := e.p.ListMessages(ctx, am.MessageFilter{Rail: rail(want.rail)})
			if err != nil || len(list) != 5 {
				t.Fatalf("ListMessages rail %q: %d, %v", want.rail, len(list), err)
			}
		}
		if list, err := e.p.ListMessages(ctx, am.MessageFilter{Rail: rail("none")}); err != nil || len(list) != 0 {
			t.Fatalf("ListMessages of an empty rail: %d, %v", len(list), err)
		}
		if all, err := e.p.ListMessages(ctx, am.MessageFilter{}); err != nil || len(all) != 10 {
			t.Fatalf("ListMessages without Rail: %d, %v", len(all), err)
		}

		poisoned, err := e.p.ListPoisoned(ctx, am.MessageFilter{Rail: rail("slow")})
		if err != nil || len(poisoned) != 2 || poisoned[0].Rail != "slow" || poisoned[1].Rail != "slow" {
			t.Fatalf("ListPoisoned rail slow: %+v, %v", poisoned, err)
		}
		if n, err := e.p.CountPoisoned(ctx, am.MessageFilter{Rail: rail("")}); err != nil || n != 1 {
			t.Fatalf("CountPoisoned default rail: %d, %v", n, err)
		}
		if n, err := e.p.PurgePoisoned(ctx, am.MessageFilter{Rail: rail("slow"), OlderThan: time.Minute}); err != nil || n != 2 {
			t.Fatalf("PurgePoisoned rail slow: %d, %v", n, err)
		}
		if left, err := e.p.ListPoisoned(ctx, am.MessageFilter{}); err != nil || len(left) != 1 || left[0].ID != "poisoned-0" {
			t.Fatalf("after purging rail slow: %+v, %v", left, err)
		}

		_, err = e.p.ListMessages(ctx, am.MessageFilter{Rail: rail("a\x00b")})
		storable := caps(dialect).TextStorable("a\x00b")
		if !storable && !errors.Is(err, am.ErrInvalidOption) {
			t.Fatalf("a rail with a NUL byte where text cannot hold one: %v, want ErrInvalidOption", err)
		}
		if storable && err != nil {
			t.Fatalf("a rail with a NUL byte: %v", err)
		}
	})
}
