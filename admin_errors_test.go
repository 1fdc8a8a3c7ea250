package asyncmonolith_test

import (
	"context"
	"errors"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
)

// The paging and counting API marks contention as ErrRetryable, as RequeuePoisoned and the
// produce path do: here PostgreSQL's lock_not_available, from a lock_timeout while another
// session holds the tables locked.
func TestPageAndCountContentionIsRetryable(t *testing.T) {
	t.Parallel()
	e := setup(t, "postgres", am.Config{}, testdb.Options{MaxOpenConns: 2})
	ctx := context.Background()
	sqlDB, err := e.db.DB()
	if err != nil {
		t.Fatal(err)
	}
	locker, err := sqlDB.Conn(ctx) // one of the two connections, holding the locks
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = locker.Close() }()
	if _, err := locker.ExecContext(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = locker.ExecContext(ctx, "ROLLBACK") }()
	if _, err := locker.ExecContext(ctx, "LOCK TABLE consumer_messages, poisoned_messages, scheduled_messages IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	// The other connection is the only one left for the plugin: a session setting sticks.
	if err := e.db.Exec("SET lock_timeout = '50ms'").Error; err != nil {
		t.Fatal(err)
	}
	calls := map[string]func() error{
		"PageMessages": func() error { _, err := e.p.PageMessages(ctx, am.MessageFilter{}, ""); return err },
		"PagePoisoned": func() error { _, err := e.p.PagePoisoned(ctx, am.MessageFilter{}, ""); return err },
		"PageSchedules": func() error {
			_, err := e.p.PageSchedules(ctx, am.ScheduleFilter{}, "")
			return err
		},
		"CountMessages": func() error { _, err := e.p.CountMessages(ctx, am.MessageFilter{}); return err },
		"CountPoisoned": func() error { _, err := e.p.CountPoisoned(ctx, am.MessageFilter{}); return err },
		"ListSchedules": func() error { _, err := e.p.ListSchedules(ctx, ""); return err },
		"GetMessage":    func() error { _, err := e.p.GetMessage(ctx, "x"); return err },
		"GetSchedule":   func() error { _, err := e.p.GetSchedule(ctx, "x"); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, am.ErrRetryable) {
			t.Errorf("%s while the tables are locked: %v, want ErrRetryable", name, err)
		}
	}
}

// On PostgreSQL a schedule id holding a NUL byte or invalid UTF-8 is not found, and such a
// tag is ErrInvalidOption to select by (ErrInvalidName to give), as the message API answers:
// never PostgreSQL's encoding error. Elsewhere they are values like any other.
func TestScheduleAPIWithBytesPostgreSQLCannotHold(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		_ = am.Register[WeeklyReport](e.p, am.ConsumerFunc[WeeklyReport](func(context.Context, *am.Message[WeeklyReport]) error { return nil }))
		id, err := am.Schedule(t.Context(), e.db, WeeklyReport{Week: "w"}, "@daily", am.Tag("t"))
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"a\x00b", "\xff"} {
			pg := !caps(dialect).TextStorable(bad) // refused as an invalid option (PostgreSQL)
			if err := am.DeleteSchedule(t.Context(), e.db, bad); !errors.Is(err, am.ErrScheduleNotFound) {
				t.Errorf("DeleteSchedule(%q): %v, want ErrScheduleNotFound", bad, err)
			}
			if _, err := e.p.GetSchedule(t.Context(), bad); !errors.Is(err, am.ErrScheduleNotFound) {
				t.Errorf("GetSchedule(%q): %v, want ErrScheduleNotFound", bad, err)
			}
			if err := am.Reschedule(t.Context(), e.db, bad, "@hourly"); !errors.Is(err, am.ErrScheduleNotFound) {
				t.Errorf("Reschedule(%q): %v, want ErrScheduleNotFound", bad, err)
			}
			_, err1 := am.DeleteSchedulesByTag(t.Context(), e.db, bad)
			_, err2 := e.p.ListSchedules(t.Context(), bad)
			_, err3 := e.p.PageSchedules(t.Context(), am.ScheduleFilter{Tag: bad}, "")
			for i, err := range []error{err1, err2, err3} {
				if pg && !errors.Is(err, am.ErrInvalidOption) || !pg && err != nil {
					t.Errorf("tag %q, call %d: %v", bad, i+1, err)
				}
			}
			if !pg {
				continue // storing one is the database's business (MySQL refuses invalid UTF-8 with its own error)
			}
			if _, err := am.Schedule(t.Context(), e.db, WeeklyReport{}, "@daily", am.Tag(bad)); !errors.Is(err, am.ErrInvalidName) {
				t.Errorf("Schedule with tag %q: %v, want ErrInvalidName", bad, err)
			}
			if err := am.Reschedule(t.Context(), e.db, id, "@daily", am.Tag(bad)); !errors.Is(err, am.ErrInvalidName) {
				t.Errorf("Reschedule with tag %q: %v, want ErrInvalidName", bad, err)
			}
		}
		if err := am.DeleteSchedule(t.Context(), e.db, id); err != nil {
			t.Fatalf("DeleteSchedule(%s): %v", id, err)
		}
	})
}
