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

// pageAll walks every page of a listing and returns the ids in order.
func pageAll[T any](t *testing.T, id func(T) string, page func(cursor string) (am.Page[T], error)) []string {
	t.Helper()
	var ids []string
	cursor := ""
	for i := 0; ; i++ {
		p, err := page(cursor)
		if err != nil {
			t.Fatalf("page %d: %v", i, err)
		}
		for _, r := range p.Rows {
			ids = append(ids, id(r))
		}
		if p.Next == "" {
			return ids
		}
		if i > 100 {
			t.Fatal("paging does not end")
		}
		cursor = p.Next
	}
}

func TestPageMessagesKeyset(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		registerBoth(t, e)
		ctx := context.Background()
		for i := range 7 {
			opts := []am.ProduceOption{am.InsertID(fmt.Sprintf("order.%d", i))}
			if i%3 == 0 {
				opts = append(opts, am.Delay(time.Hour))
			}
			if err := am.ProduceNow(ctx, e.db, OrderCancelled{OrderID: fmt.Sprint(i)}, opts...); err != nil {
				t.Fatal(err)
			}
			e.clock.Advance(time.Millisecond) // some rows share created_at, others not
		}
		all, err := e.p.ListMessages(ctx, am.MessageFilter{Limit: 1000})
		if err != nil || len(all) != 14 {
			t.Fatalf("list = %d, %v", len(all), err)
		}
		want := make([]string, len(all))
		for i, m := range all {
			want[i] = m.ID
		}
		msgID := func(m am.ConsumerMessage) string { return m.ID }
		got := pageAll(t, msgID, func(c string) (am.Page[am.ConsumerMessage], error) {
			return e.p.PageMessages(ctx, am.MessageFilter{Limit: 3}, c)
		})
		if !slices.Equal(got, want) {
			t.Fatalf("pages = %v\nwant    %v", got, want)
		}
		// A last page that is exactly full has no Next.
		if p, err := e.p.PageMessages(ctx, am.MessageFilter{Limit: 14}, ""); err != nil || len(p.Rows) != 14 || p.Next != "" {
			t.Fatalf("full last page: %d rows, next %q, %v", len(p.Rows), p.Next, err)
		}
		due := false
		delayed := pageAll(t, msgID, func(c string) (am.Page[am.ConsumerMessage], error) {
			return e.p.PageMessages(ctx, am.MessageFilter{Limit: 2, ConsumerType: "Refunder", Due: &due}, c)
		})
		if len(delayed) != 3 { // orders 0, 3, 6
			t.Fatalf("delayed Refunder rows = %d, want 3", len(delayed))
		}
		one, err := e.p.PageMessages(ctx, am.MessageFilter{InsertID: "order.4"}, "")
		if err != nil || len(one.Rows) != 2 || one.Rows[0].InsertID != "order.4" {
			t.Fatalf("insert id filter: %+v, %v", one.Rows, err)
		}
		if n, err := e.p.CountMessages(ctx, am.MessageFilter{ConsumerType: "EmailSender", Due: &due}); err != nil || n != 3 {
			t.Fatalf("count = %d, %v", n, err)
		}
		if _, err := e.p.PageMessages(ctx, am.MessageFilter{}, "not-a-cursor"); !errors.Is(err, am.ErrInvalidOption) {
			t.Fatalf("bad cursor: %v", err)
		}
		if _, err := e.p.PageMessages(ctx, am.MessageFilter{}, "1.x.id"); !errors.Is(err, am.ErrInvalidOption) {
			t.Fatalf("bad cursor number: %v", err)
		}
		m, err := e.p.GetMessage(ctx, want[0])
		if err != nil || m.ID != want[0] {
			t.Fatalf("get = %+v, %v", m, err)
		}
		if _, err := e.p.GetMessage(ctx, "missing"); !errors.Is(err, am.ErrMessageNotFound) {
			t.Fatalf("get missing: %v", err)
		}
	})
}

func TestPagePoisonedAndSchedules(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e, _ := poisonSetup(t, dialect)
		reportConsumers(t, e.p)
		ctx := context.Background()
		for i := range 5 {
			if err := am.ProduceNow(ctx, e.db, Job{N: i}, am.InsertID(fmt.Sprintf("job-%d", i%2))); err != nil {
				t.Fatal(err)
			}
			mustBatch(t, e)
			if i != 2 {
				e.clock.Advance(time.Second) // jobs 2 and 3 are poisoned in the same millisecond
			}
		}
		list, err := e.p.ListPoisoned(ctx, am.MessageFilter{})
		if err != nil || len(list) != 5 {
			t.Fatalf("poisoned = %d, %v", len(list), err)
		}
		poisonedID := func(m am.PoisonedMessage) string { return m.ID }
		got := pageAll(t, poisonedID, func(c string) (am.Page[am.PoisonedMessage], error) {
			return e.p.PagePoisoned(ctx, am.MessageFilter{Limit: 2}, c)
		})
		if len(got) != 5 || len(uniqIDs(got)) != 5 {
			t.Fatalf("poisoned pages = %v", got)
		}
		rows, _ := e.p.PagePoisoned(ctx, am.MessageFilter{Limit: 10}, "")
		for i := 1; i < len(rows.Rows); i++ {
			if rows.Rows[i].PoisonedAt > rows.Rows[i-1].PoisonedAt {
				t.Fatalf("not most recent first: %+v", rows.Rows)
			}
		}
		odd := pageAll(t, poisonedID, func(c string) (am.Page[am.PoisonedMessage], error) {
			return e.p.PagePoisoned(ctx, am.MessageFilter{Limit: 1, InsertID: "job-1"}, c)
		})
		if len(odd) != 2 {
			t.Fatalf("insert id job-1: %d poisoned, want 2", len(odd))
		}
		if n, err := e.p.CountPoisoned(ctx, am.MessageFilter{OlderThan: 2500 * time.Millisecond}); err != nil || n != 2 {
			t.Fatalf("count older than 2.5s = %d, %v, want 2", n, err)
		}

		for _, expr := range []string{"@hourly", "@daily", "@weekly"} {
			if _, err := am.Schedule(e.db, WeeklyReport{}, expr, am.Tag("t")); err != nil {
				t.Fatal(err)
			}
		}
		var next []string
		sched := pageAll(t, func(s am.ScheduleInfo) string { next = append(next, s.ChronExpression); return s.ID },
			func(c string) (am.Page[am.ScheduleInfo], error) { return e.p.PageSchedules(ctx, "t", 2, c) })
		if len(sched) != 3 || !slices.Equal(next, []string{"@hourly", "@daily", "@weekly"}) {
			t.Fatalf("schedule pages = %v", next)
		}
	})
}

func uniqIDs(ids []string) map[string]bool {
	m := map[string]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return m
}
