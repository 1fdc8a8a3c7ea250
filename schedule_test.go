package asyncmonolith_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

type WeeklyReport struct {
	Week string `json:"week"`
}

func reportConsumers(t *testing.T, p *am.Plugin) (*recorder[WeeklyReport], *recorder[WeeklyReport]) {
	t.Helper()
	a, b := &recorder[WeeklyReport]{}, &recorder[WeeklyReport]{}
	if err := am.Register[WeeklyReport](p, am.ConsumerFunc[WeeklyReport](a.Consume), am.WithName("Mailer")); err != nil {
		t.Fatal(err)
	}
	if err := am.Register[WeeklyReport](p, am.ConsumerFunc[WeeklyReport](b.Consume), am.WithName("Archiver")); err != nil {
		t.Fatal(err)
	}
	return a, b
}

func mustFire(t *testing.T, p *am.Plugin) int {
	t.Helper()
	n, err := p.FireSchedules(context.Background())
	if err != nil {
		t.Fatalf("FireSchedules: %v", err)
	}
	return n
}

func TestScheduleWritesAndFires(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		a, b := reportConsumers(t, e.p)
		// Monday 2026-01-05 12:00 UTC is 12:00 in London (GMT): the next Monday noon is a week later.
		id, err := am.Schedule(t.Context(), e.db, WeeklyReport{Week: "w"}, "0 0 12 * * MON", am.InZone("Europe/London"), am.Tag("reports"))
		if err != nil {
			t.Fatal(err)
		}
		s, err := e.p.GetSchedule(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		want := time.Date(2026, 1, 12, 12, 0, 0, 0, time.UTC)
		if s.AvailableAfter != want.UnixMilli() || *s.Tag != "reports" || s.ChronTimezone != "Europe/London" ||
			s.PayloadType != "WeeklyReport" || s.Payload != `{"week":"w"}` {
			t.Fatalf("schedule = %+v, due %v (want %v)", s, time.UnixMilli(s.AvailableAfter).UTC(), want)
		}
		if mustFire(t, e.p) != 0 {
			t.Fatal("fired before it was due")
		}
		e.clock.Advance(7 * 24 * time.Hour)
		if mustFire(t, e.p) != 1 {
			t.Fatal("did not fire when due")
		}
		mustBatch(t, e)
		if a.count() != 1 || b.count() != 1 || a.messages()[0].Payload.Week != "w" {
			t.Fatalf("consumers ran %d and %d times", a.count(), b.count())
		}
		s, _ = e.p.GetSchedule(t.Context(), id)
		if s.AvailableAfter != want.Add(7*24*time.Hour).UnixMilli() {
			t.Fatalf("next due %v", time.UnixMilli(s.AvailableAfter).UTC())
		}
	})
}

func TestScheduleUpdateListDelete(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		reportConsumers(t, e.p)
		var ids []string
		for range 3 {
			id, err := am.Schedule(t.Context(), e.db, WeeklyReport{}, "@daily", am.Tag("t1"))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		other, err := am.Schedule(t.Context(), e.db, WeeklyReport{}, "*/5 * * * *", am.Tag("t2"))
		if err != nil {
			t.Fatal(err)
		}
		if err := am.Reschedule(t.Context(), e.db, other, "0 9 * * *", am.InZone("America/New_York"), am.WithPayload(WeeklyReport{Week: "new"}), am.Tag("t1")); err != nil {
			t.Fatal(err)
		}
		list, err := e.p.ListSchedules(t.Context(), "t1")
		if err != nil || len(list) != 4 {
			t.Fatalf("t1 has %d schedules (err %v), want 4", len(list), err)
		}
		s, _ := e.p.GetSchedule(t.Context(), other)
		if s.ChronExpression != "0 9 * * *" || s.ChronTimezone != "America/New_York" || s.Payload != `{"week":"new"}` ||
			s.AvailableAfter != time.Date(2026, 1, 5, 14, 0, 0, 0, time.UTC).UnixMilli() {
			t.Fatalf("rescheduled = %+v", s)
		}
		if err := am.DeleteSchedule(t.Context(), e.db, ids[0]); err != nil {
			t.Fatal(err)
		}
		if err := am.DeleteSchedule(t.Context(), e.db, ids[0]); !errors.Is(err, am.ErrScheduleNotFound) {
			t.Fatalf("second delete: %v", err)
		}
		if n, err := am.DeleteSchedulesByTag(t.Context(), e.db, "t1"); err != nil || n != 3 {
			t.Fatalf("deleted %d by tag (err %v), want 3", n, err)
		}
		// In a transaction: rolled back with it.
		boom := errors.New("boom")
		err = e.db.Transaction(func(tx *gorm.DB) error {
			if _, err := am.Schedule(t.Context(), tx, WeeklyReport{}, "@hourly"); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) || e.count(t, &am.ScheduledMessage{}) != 0 {
			t.Fatalf("schedule survived its rolled-back transaction (err %v)", err)
		}
	})
}

func TestScheduleInvalidInput(t *testing.T) {
	t.Parallel()
	e := setup(t, "sqlite", am.Config{})
	reportConsumers(t, e.p)
	for _, c := range []struct{ expr, zone string }{
		{"* * *", ""}, {"61 * * * * *", ""}, {"@sometimes", ""}, {"0 0 12 * * MON", "Mars/Olympus"},
		{"0 0 12 * * MON", "Local"}, {"CRON_TZ=UTC 0 * * * *", ""}, {"0 0 0 30 2 *", ""},
	} {
		_, err := am.Schedule(t.Context(), e.db, WeeklyReport{}, c.expr, am.InZone(c.zone))
		if !errors.Is(err, am.ErrInvalidSchedule) {
			t.Errorf("Schedule(%q, zone %q): err = %v, want ErrInvalidSchedule", c.expr, c.zone, err)
		}
	}
	type Orphan struct{}
	if _, err := am.Schedule(t.Context(), e.db, Orphan{}, "@daily"); !errors.Is(err, am.ErrNoConsumers) {
		t.Errorf("payload without consumers: %v", err)
	}
	if n := e.count(t, &am.ScheduledMessage{}); n != 0 {
		t.Fatalf("%d schedules written by failed calls", n)
	}
}

func TestScheduleAfterDowntimeFiresOnceWithoutBackfill(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		a, _ := reportConsumers(t, e.p)
		id, err := am.Schedule(t.Context(), e.db, WeeklyReport{}, "* * * * * *")
		if err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(100 * time.Second)
		mustFire(t, e.p)
		mustFire(t, e.p)
		mustBatch(t, e)
		if a.count() != 1 {
			t.Fatalf("fired %d times after 100 s of downtime, want 1", a.count())
		}
		s, _ := e.p.GetSchedule(t.Context(), id)
		if want := e.clock.Now().Add(time.Second).UnixMilli(); s.AvailableAfter != want {
			t.Fatalf("next due %d, want now+1s (%d)", s.AvailableAfter, want)
		}
	})
}

func TestBrokenScheduleDoesNotBlockOthers(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		var logs syncBuffer
		e := setup(t, dialect, am.Config{Logger: newTextLogger(&logs)})
		a, _ := reportConsumers(t, e.p)
		broken, _ := am.Schedule(t.Context(), e.db, WeeklyReport{Week: "broken"}, "* * * * * *")
		zoneGone, _ := am.Schedule(t.Context(), e.db, WeeklyReport{Week: "zone"}, "* * * * * *")
		if _, err := am.Schedule(t.Context(), e.db, WeeklyReport{Week: "ok"}, "* * * * * *"); err != nil {
			t.Fatal(err)
		}
		e.db.Model(&am.ScheduledMessage{}).Where("id = ?", broken).Update("chron_expression", "not a cron")
		e.db.Model(&am.ScheduledMessage{}).Where("id = ?", zoneGone).Update("chron_timezone", "Atlantis/Gone")
		for range 3 {
			e.clock.Advance(time.Second)
			mustFire(t, e.p)
		}
		mustBatch(t, e)
		if a.count() != 3 {
			t.Fatalf("the healthy schedule fired %d times, want 3", a.count())
		}
		for _, m := range a.messages() {
			if m.Payload.Week != "ok" {
				t.Fatalf("a broken schedule fired: %+v", m.Payload)
			}
		}
		out := logs.String()
		if !strings.Contains(out, broken) || !strings.Contains(out, zoneGone) {
			t.Fatalf("the broken schedules are not named in the log:\n%s", out)
		}
		// Skipped rows are pushed back a minute instead of being re-fetched on every poll.
		s, _ := e.p.GetSchedule(t.Context(), broken)
		if s.AvailableAfter <= e.clock.Now().UnixMilli() {
			t.Fatal("a broken schedule stays due and would be fetched on every poll")
		}
	})
}

func TestScheduleFiresOncePerOccurrenceAcrossInstances(t *testing.T) {
	t.Parallel()
	for _, dialect := range []string{"postgres", "mysql"} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			e := setup(t, dialect, am.Config{})
			other := instance(t, e.db, dialect, am.Config{Clock: e.clock})
			for _, p := range []*am.Plugin{e.p, other} {
				reportConsumers(t, p)
			}
			if _, err := am.Schedule(t.Context(), e.db, WeeklyReport{}, "* * * * * *"); err != nil {
				t.Fatal(err)
			}
			for range 10 {
				e.clock.Advance(time.Second)
				var wg sync.WaitGroup
				for _, p := range []*am.Plugin{e.p, other, e.p, other} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if _, err := p.FireSchedules(context.Background()); err != nil && !errors.Is(err, am.ErrRetryable) {
							t.Error(err)
						}
					}()
				}
				wg.Wait()
			}
			var perOccurrence []struct {
				InsertID string
				N        int
			}
			e.db.Model(&am.ConsumerMessage{}).Where("consumer_type = ?", "Mailer").
				Select("insert_id, count(*) AS n").Group("insert_id").Scan(&perOccurrence)
			if len(perOccurrence) != 10 {
				t.Fatalf("%d occurrences fired, want 10", len(perOccurrence))
			}
			for _, o := range perOccurrence {
				if o.N != 1 {
					t.Fatalf("occurrence %s fired %d times", o.InsertID, o.N)
				}
			}
		})
	}
}

func TestScheduleFiresWithStartedProcessors(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{SchedulePollInterval: 20 * time.Millisecond})
		a, _ := reportConsumers(t, e.p)
		if _, err := am.Schedule(t.Context(), e.db, WeeklyReport{}, "@every 1m"); err != nil {
			t.Fatal(err)
		}
		e.start(t)
		e.clock.Advance(time.Minute)
		eventually(t, func() bool { return a.count() == 1 }, "the schedule fired and its message was consumed")
	})
}

func TestScheduleDaylightSavingTransitions(t *testing.T) {
	t.Parallel()
	london, _ := time.LoadLocation("Europe/London")
	newYork, _ := time.LoadLocation("America/New_York")
	fires := func(t *testing.T, expr string, loc *time.Location, from time.Time, n int) []string {
		t.Helper()
		e := setup(t, "sqlite", am.Config{})
		e.clock.Advance(from.Sub(e.clock.Now()))
		a, _ := reportConsumers(t, e.p)
		if _, err := am.Schedule(t.Context(), e.db, WeeklyReport{}, expr, am.InZone(loc.String())); err != nil {
			t.Fatal(err)
		}
		var out []string
		for range n {
			var s am.ScheduledMessage
			e.db.First(&s)
			due := time.UnixMilli(s.AvailableAfter)
			out = append(out, due.In(loc).Format("01-02 15:04 MST"))
			e.clock.Advance(due.Sub(e.clock.Now()) + 10*time.Millisecond)
			mustFire(t, e.p)
		}
		mustBatch(t, e)
		if a.count() != n {
			t.Fatalf("%d firings, want %d", a.count(), n)
		}
		return out
	}
	// Clocks go back at 02:00 BST on 25 October 2026: 01:30 happens twice, and fires once.
	got := fires(t, "0 30 1 * * *", london, time.Date(2026, 10, 24, 12, 0, 0, 0, london), 3)
	if strings.Join(got, ",") != "10-25 01:30 BST,10-26 01:30 GMT,10-27 01:30 GMT" {
		t.Fatalf("fall back: %v", got)
	}
	// Clocks go forward at 01:00 GMT on 29 March 2026: 01:30 does not exist that day and is skipped.
	got = fires(t, "30 1 * * *", london, time.Date(2026, 3, 28, 12, 0, 0, 0, london), 2)
	if strings.Join(got, ",") != "03-30 01:30 BST,03-31 01:30 BST" {
		t.Fatalf("spring forward (London): %v", got)
	}
	// New York skips 02:00-03:00 on 8 March 2026.
	got = fires(t, "0 30 2 * * *", newYork, time.Date(2026, 3, 7, 12, 0, 0, 0, newYork), 2)
	if strings.Join(got, ",") != "03-09 02:30 EDT,03-10 02:30 EDT" {
		t.Fatalf("spring forward (New York): %v", got)
	}
}

func TestSQLiteRefusesConcurrentScheduleProcessors(t *testing.T) {
	t.Parallel()
	e := setup(t, "sqlite", am.Config{ScheduleProcessors: 2})
	err := e.p.Start(context.Background())
	if !errors.Is(err, am.ErrConcurrencyUnsupported) || !strings.Contains(err.Error(), "ScheduleProcessors") {
		t.Fatalf("err = %v", err)
	}
}
