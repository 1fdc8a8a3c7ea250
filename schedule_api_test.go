package asyncmonolith_test

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

// scheduleHookCalls records the schedule hooks' calls.
type scheduleHookCalls struct {
	mu      sync.Mutex
	fired   []string
	skipped map[string]error
}

func (c *scheduleHookCalls) hooks() am.Hooks {
	c.skipped = map[string]error{}
	return am.Hooks{
		ScheduleFired: func(_ context.Context, id, _ string) {
			c.mu.Lock()
			c.fired = append(c.fired, id)
			c.mu.Unlock()
		},
		ScheduleSkipped: func(_ context.Context, id, _ string, err error) {
			c.mu.Lock()
			c.skipped[id] = err
			c.mu.Unlock()
		},
	}
}

// A schedule skipped as broken (an expression or zone edited by hand, a payload type no
// consumer in this process takes) is reported to ScheduleSkipped, never to ScheduleFired,
// whether or not a healthy schedule fires in the same batch.
func TestScheduleFiredNotCalledForBrokenSchedules(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		var calls scheduleHookCalls
		e := setup(t, dialect, am.Config{Hooks: calls.hooks()})
		reportConsumers(t, e.p)
		ctx := t.Context()
		ok, err := am.Schedule(ctx, e.db, WeeklyReport{Week: "ok"}, "* * * * * *")
		if err != nil {
			t.Fatal(err)
		}
		badExpr, _ := am.Schedule(ctx, e.db, WeeklyReport{Week: "expr"}, "* * * * * *")
		badZone, _ := am.Schedule(ctx, e.db, WeeklyReport{Week: "zone"}, "* * * * * *")
		e.db.Model(&am.ScheduledMessage{}).Where("id = ?", badExpr).Update("chron_expression", "not a cron")
		e.db.Model(&am.ScheduledMessage{}).Where("id = ?", badZone).Update("chron_timezone", "Atlantis/Gone")
		orphan := am.ScheduledMessage{ID: "orphan-schedule", AvailableAfter: e.clock.Now().UnixMilli(),
			ChronExpression: "* * * * * *", ChronTimezone: "UTC", PayloadType: "NobodyConsumesThis", Payload: "{}"}
		if err := e.db.Create(&orphan).Error; err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(time.Second)
		if n := mustFire(t, e.p); n != 4 {
			t.Fatalf("fetched %d due schedules, want 4", n)
		}
		calls.mu.Lock()
		fired, skipped := calls.fired, calls.skipped
		calls.mu.Unlock()
		if len(fired) != 1 || fired[0] != ok {
			t.Fatalf("ScheduleFired for %v, want only the healthy schedule %s", fired, ok)
		}
		for id, want := range map[string]error{badExpr: am.ErrInvalidSchedule, badZone: am.ErrInvalidSchedule, orphan.ID: am.ErrNoConsumers} {
			if err, called := skipped[id]; !called || !errors.Is(err, want) {
				t.Errorf("ScheduleSkipped(%s) called %v with %v, want an error matching %v", id, called, err, want)
			}
		}
		if len(skipped) != 3 {
			t.Errorf("ScheduleSkipped called for %d schedules, want 3", len(skipped))
		}

		// With only broken schedules due, nothing fires either.
		if err := am.DeleteSchedule(ctx, e.db, ok); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(2 * time.Minute) // past the broken schedules' retry
		if n := mustFire(t, e.p); n != 3 {
			t.Fatalf("fetched %d due schedules, want the 3 broken ones", n)
		}
		calls.mu.Lock()
		defer calls.mu.Unlock()
		if len(calls.fired) != 1 {
			t.Fatalf("ScheduleFired called for %v after only broken schedules were due", calls.fired)
		}
	})
}

// WithPayload applies to Reschedule only: it is not a ScheduleOption, so Schedule (whose
// payload is an argument) cannot be given one, while every ScheduleOption is a
// RescheduleOption.
func TestWithPayloadIsARescheduleOptionOnly(t *testing.T) {
	t.Parallel()
	scheduleOpt := reflect.TypeFor[am.ScheduleOption]()
	rescheduleOpt := reflect.TypeFor[am.RescheduleOption]()
	if got := reflect.TypeOf(am.WithPayload(WeeklyReport{})); got.AssignableTo(scheduleOpt) {
		t.Fatalf("WithPayload returns %v, which Schedule accepts", got)
	}
	for _, opt := range []any{am.WithPayload(WeeklyReport{}), am.InZone("UTC"), am.Tag("t")} {
		if !reflect.TypeOf(opt).AssignableTo(rescheduleOpt) {
			t.Errorf("%T is not a RescheduleOption", opt)
		}
	}
}

// Reschedule with WithPayload(nil) is an error, not "keep the payload".
func TestRescheduleWithNilPayload(t *testing.T) {
	t.Parallel()
	e := setup(t, "sqlite", am.Config{})
	reportConsumers(t, e.p)
	id, err := am.Schedule(t.Context(), e.db, WeeklyReport{Week: "w"}, "@daily")
	if err != nil {
		t.Fatal(err)
	}
	if err := am.Reschedule(t.Context(), e.db, id, "@hourly", am.WithPayload(nil)); !errors.Is(err, am.ErrInvalidPayload) {
		t.Fatalf("Reschedule(WithPayload(nil)) = %v, want ErrInvalidPayload", err)
	}
	s, err := e.p.GetSchedule(t.Context(), id)
	if err != nil || s.ChronExpression != "@daily" || s.Payload != `{"week":"w"}` {
		t.Fatalf("after a failed Reschedule: %+v, %v", s, err)
	}
}

// Every schedule call that touches the database honours its context: a cancelled one
// fails with context.Canceled and writes nothing.
func TestScheduleCallsHonourTheirContext(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		reportConsumers(t, e.p)
		id, err := am.Schedule(t.Context(), e.db, WeeklyReport{}, "@daily", am.Tag("t"))
		if err != nil {
			t.Fatal(err)
		}
		cancelled, cancel := context.WithCancel(t.Context())
		cancel()
		calls := map[string]func() error{
			"Schedule": func() error {
				_, err := am.Schedule(cancelled, e.db, WeeklyReport{}, "@hourly")
				return err
			},
			"Reschedule":           func() error { return am.Reschedule(cancelled, e.db, id, "@hourly") },
			"DeleteSchedule":       func() error { return am.DeleteSchedule(cancelled, e.db, id) },
			"DeleteSchedulesByTag": func() error { _, err := am.DeleteSchedulesByTag(cancelled, e.db, "t"); return err },
			"GetSchedule":          func() error { _, err := e.p.GetSchedule(cancelled, id); return err },
			"ListSchedules":        func() error { _, err := e.p.ListSchedules(cancelled, "t"); return err },
		}
		for name, call := range calls {
			if err := call(); !errors.Is(err, context.Canceled) {
				t.Errorf("%s with a cancelled context: %v, want context.Canceled", name, err)
			}
		}
		s, err := e.p.GetSchedule(t.Context(), id)
		if err != nil || s.ChronExpression != "@daily" || e.count(t, &am.ScheduledMessage{}) != 1 {
			t.Fatalf("the cancelled calls changed the schedules: %+v, %v", s, err)
		}
	})
}

// A schedule written in the caller's transaction commits with it, and every write
// function takes the transaction.
func TestScheduleWritesInTheCallersTransaction(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		reportConsumers(t, e.p)
		ctx := t.Context()
		var id string
		err := e.db.Transaction(func(tx *gorm.DB) error {
			var err error
			if id, err = am.Schedule(ctx, tx, WeeklyReport{Week: "a"}, "@daily", am.Tag("t")); err != nil {
				return err
			}
			return am.Reschedule(ctx, tx, id, "@hourly", am.WithPayload(WeeklyReport{Week: "b"}))
		})
		if err != nil {
			t.Fatal(err)
		}
		s, err := e.p.GetSchedule(ctx, id)
		if err != nil || s.ChronExpression != "@hourly" || s.Payload != `{"week":"b"}` || !s.NextRun.Equal(time.UnixMilli(s.AvailableAfter)) {
			t.Fatalf("committed schedule = %+v, %v", s, err)
		}
		boom := errors.New("boom")
		err = e.db.Transaction(func(tx *gorm.DB) error {
			if n, err := am.DeleteSchedulesByTag(ctx, tx, "t"); err != nil || n != 1 {
				t.Errorf("DeleteSchedulesByTag in the transaction = %d, %v", n, err)
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatal(err)
		}
		if _, err := e.p.GetSchedule(ctx, id); err != nil {
			t.Fatalf("a delete rolled back with its transaction removed the schedule: %v", err)
		}
	})
}

// The models Hooks.Produced shows have no unexported fields: nothing of the library's
// bookkeeping leaks into them (a copy compares equal to the row read back).
func TestModelsHaveOnlyExportedFields(t *testing.T) {
	t.Parallel()
	for _, m := range []any{am.ConsumerMessage{}, am.PoisonedMessage{}, am.ScheduledMessage{}} {
		typ := reflect.TypeOf(m)
		for i := range typ.NumField() {
			if f := typ.Field(i); !f.IsExported() {
				t.Errorf("%s has the unexported field %s", typ.Name(), f.Name)
			}
		}
	}
}
