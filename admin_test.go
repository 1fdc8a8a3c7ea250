package asyncmonolith_test

import (
	"context"
	"errors"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// poisonOne produces a Job for a consumer that always fails once, and processes it.
func poisonSetup(t *testing.T, dialect string) (*env, *recorder[Job]) {
	t.Helper()
	e := setup(t, dialect, am.Config{MaxAttempts: 1})
	fail := true
	r := &recorder[Job]{fn: func(ctx context.Context, m *am.Message[Job]) error {
		if fail {
			return errors.New("downstream unavailable")
		}
		return nil
	}}
	if err := am.Register[Job](e.p, Flaky{r}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fail = false })
	return e, r
}

func TestPoisonedListRequeueDeletePurge(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e, r := poisonSetup(t, dialect)
		ctx := context.Background()
		for i := range 3 {
			if err := am.ProduceNow(ctx, e.db, Job{N: i}, am.InsertID("job:"+string(rune('a'+i)))); err != nil {
				t.Fatal(err)
			}
		}
		mustBatch(t, e)
		list, err := e.p.ListPoisoned(ctx, am.MessageFilter{ConsumerType: "Flaky"})
		if err != nil || len(list) != 3 {
			t.Fatalf("poisoned = %d (err %v), want 3", len(list), err)
		}
		one, err := e.p.GetPoisoned(ctx, list[0].ID)
		if err != nil || one.LastError != "downstream unavailable" {
			t.Fatalf("get = %+v, %v", one, err)
		}
		if _, err := e.p.GetPoisoned(ctx, "nope"); !errors.Is(err, am.ErrMessageNotFound) {
			t.Fatalf("missing id: %v", err)
		}
		if got, _ := e.p.ListPoisoned(ctx, am.MessageFilter{PayloadType: "Other"}); len(got) != 0 {
			t.Fatal("payload type filter ignored")
		}
		// Requeue one: back with attempts 0; the fixed consumer completes it.
		r.fn = nil
		n, err := e.p.RequeuePoisoned(ctx, []string{list[0].ID})
		if err != nil || n != 1 {
			t.Fatalf("requeue: %d, %v", n, err)
		}
		var back am.ConsumerMessage
		if err := e.db.First(&back).Error; err != nil || back.Attempts != 0 || back.ID != list[0].ID {
			t.Fatalf("requeued row = %+v (%v)", back, err)
		}
		mustBatch(t, e)
		if e.pending(t) != 0 {
			t.Fatal("requeued message not consumed")
		}
		// A requeue whose insert id is pending again is refused for that message.
		if err := am.ProduceNow(ctx, e.db, Job{N: 9}, am.InsertID(list[1].InsertID)); err != nil {
			t.Fatal(err)
		}
		n, err = e.p.RequeuePoisoned(ctx, []string{list[1].ID}, am.RequeueDelay(time.Minute))
		if !errors.Is(err, am.ErrRequeueConflict) || n != 0 {
			t.Fatalf("conflicting requeue: %d, %v", n, err)
		}
		if _, err := e.p.RequeuePoisoned(ctx, []string{"missing"}); !errors.Is(err, am.ErrMessageNotFound) {
			t.Fatalf("requeue of a missing id: %v", err)
		}
		if n, err := e.p.DeletePoisoned(ctx, []string{list[1].ID}); err != nil || n != 1 {
			t.Fatalf("delete: %d, %v", n, err)
		}
		if _, err := e.p.PurgePoisoned(ctx, am.MessageFilter{}); !errors.Is(err, am.ErrInvalidOption) {
			t.Fatalf("purge without age: %v", err)
		}
		if n, _ := e.p.PurgePoisoned(ctx, am.MessageFilter{OlderThan: time.Hour}); n != 0 {
			t.Fatal("purged a message younger than the age")
		}
		e.clock.Advance(2 * time.Hour)
		if n, err := e.p.PurgePoisoned(ctx, am.MessageFilter{OlderThan: time.Hour}); err != nil || n != 1 {
			t.Fatalf("purge: %d, %v", n, err)
		}
	})
}

func TestQueueListDeleteAndStats(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e, _ := poisonSetup(t, dialect)
		a, _ := registerBoth(t, e)
		_ = a
		ctx := context.Background()
		_ = am.ProduceNow(ctx, e.db, Job{N: 1})                                             // poisoned below
		_ = am.ProduceNow(ctx, e.db, OrderCancelled{OrderID: "due"})                        // 2 due rows
		_ = am.ProduceNow(ctx, e.db, OrderCancelled{OrderID: "later"}, am.Delay(time.Hour)) // 2 delayed rows
		// Poison the Job only: process it alone by making the orders wait.
		if _, err := e.p.ProcessBatch(ctx); err != nil {
			t.Fatal(err)
		}
		_ = am.ProduceNow(ctx, e.db, OrderCancelled{OrderID: "due2"})
		e.clock.Advance(30 * time.Second)
		stats, err := e.p.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		by := map[string]am.QueueStats{}
		for _, s := range stats {
			by[s.ConsumerType] = s
		}
		if s := by["Flaky"]; s.Poisoned != 1 || s.Pending != 0 {
			t.Fatalf("Flaky stats = %+v", s)
		}
		if s := by["EmailSender"]; s.Pending != 2 || s.Due != 1 || s.OldestDueAge != 30*time.Second {
			t.Fatalf("EmailSender stats = %+v", s)
		}
		due := true
		list, err := e.p.ListMessages(ctx, am.MessageFilter{ConsumerType: "EmailSender", Due: &due})
		if err != nil || len(list) != 1 {
			t.Fatalf("due list = %d, %v", len(list), err)
		}
		notDue := false
		delayed, _ := e.p.ListMessages(ctx, am.MessageFilter{Due: &notDue})
		if len(delayed) != 2 {
			t.Fatalf("delayed = %d, want 2", len(delayed))
		}
		if n, err := e.p.DeleteMessages(ctx, []string{delayed[0].ID, delayed[1].ID}); err != nil || n != 2 {
			t.Fatalf("delete: %d, %v", n, err)
		}
		if e.pending(t) != 2 {
			t.Fatalf("pending = %d, want 2", e.pending(t))
		}
	})
}

func TestListSchedules(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		reportConsumers(t, e.p)
		_, _ = am.Schedule(t.Context(), e.db, WeeklyReport{}, "@daily", am.Tag("a"))
		_, _ = am.Schedule(t.Context(), e.db, WeeklyReport{}, "@hourly", am.Tag("b"))
		all, err := e.p.ListSchedules(context.Background(), "")
		if err != nil || len(all) != 2 || all[0].ChronExpression != "@hourly" {
			t.Fatalf("schedules = %+v, %v", all, err)
		}
		if !all[0].NextRun.Equal(e.clock.Now().Add(time.Hour)) {
			t.Fatalf("next run %v", all[0].NextRun)
		}
		tagged, _ := e.p.ListSchedules(context.Background(), "a")
		if len(tagged) != 1 {
			t.Fatalf("tag filter: %d", len(tagged))
		}
	})
}
