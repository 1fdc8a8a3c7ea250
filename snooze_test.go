package asyncmonolith_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// SnoozeMark is a row a snoozing consumer writes through Message.Tx.
type SnoozeMark struct {
	ID string `gorm:"primaryKey;size:64"`
}

// A snooze runs the message again at the time asked without using an attempt, counted on
// the row and on Message.Snoozes; Message.Tx is rolled back; the breaker does not count
// it; hooks and counters report it apart. Past the bound (WithMaxSnoozes) a snooze is a
// failed attempt saying so, and the last one poisons the message with that reason.
func TestSnoozeKeepsAttemptAndRespectsBound(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		var mu sync.Mutex
		var results []am.Result
		e := setup(t, dialect, am.Config{MaxAttempts: 2, BreakerFailures: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Hooks: am.Hooks{AfterConsume: func(_ context.Context, _ am.MessageInfo, r am.Result) {
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}}})
		if err := e.db.AutoMigrate(&SnoozeMark{}); err != nil {
			t.Fatal(err)
		}
		c := &recorder[Job]{fn: func(_ context.Context, m *am.Message[Job]) error {
			if err := m.Tx.Create(&SnoozeMark{ID: fmt.Sprint(m.Attempt, "-", m.Snoozes)}).Error; err != nil {
				return err
			}
			return fmt.Errorf("not ready yet: %w", am.SnoozeFor(time.Minute))
		}}
		if err := am.Register[Job](e.p, c, am.WithMaxSnoozes(2)); err != nil {
			t.Fatal(err)
		}
		produceRetryJobs(t, e, Job{N: 1})
		type step struct {
			attempt, snoozes int // what the run sees
			rowAttempts      int // on the row afterwards
			rowSnoozes       int
			due              time.Duration
		}
		for i, s := range []step{
			{1, 0, 0, 1, time.Minute},
			{1, 1, 0, 2, time.Minute},
			{1, 2, 1, 2, time.Minute}, // over the bound: a failed attempt, due no earlier than the snooze asked
		} {
			now := e.clock.Now()
			if n := mustBatch(t, e); n != 1 {
				t.Fatalf("step %d: %d ran, want 1", i, n)
			}
			m := c.messages()[i]
			if m.Attempt != s.attempt || m.Snoozes != s.snoozes {
				t.Fatalf("step %d: run saw attempt %d, snoozes %d; want %d, %d", i, m.Attempt, m.Snoozes, s.attempt, s.snoozes)
			}
			var row am.ConsumerMessage
			if err := e.db.Take(&row).Error; err != nil {
				t.Fatal(err)
			}
			if row.Attempts != s.rowAttempts || row.Snoozes != s.rowSnoozes || row.AvailableAfter != now.Add(s.due).UnixMilli() {
				t.Fatalf("step %d: row attempts %d snoozes %d due now+%dms; want %d, %d, now+%s",
					i, row.Attempts, row.Snoozes, row.AvailableAfter-now.UnixMilli(), s.rowAttempts, s.rowSnoozes, s.due)
			}
			if s.rowAttempts > 0 && (row.LastError == nil || !strings.Contains(*row.LastError, "snooze limit reached")) {
				t.Fatalf("step %d: last_error %v does not say the snooze limit was reached", i, row.LastError)
			}
			if paused := e.p.Paused(); len(paused) != 0 {
				t.Fatalf("step %d: snoozes paused the consumer (BreakerFailures 1): %v", i, paused)
			}
			e.clock.Advance(time.Minute)
		}
		mustBatch(t, e) // attempt 2, the last: poisoned with the reason
		poisoned, err := e.p.ListPoisoned(context.Background(), am.MessageFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(poisoned) != 1 || poisoned[0].Attempts != 2 || !strings.Contains(poisoned[0].LastError, "snooze limit reached") ||
			!strings.Contains(poisoned[0].LastError, "snoozed for 1m0s") {
			t.Fatalf("poisoned %+v, want one after 2 attempts saying the snooze limit was reached", poisoned)
		}
		if n := e.count(t, &SnoozeMark{}); n != 0 {
			t.Fatalf("%d Message.Tx writes of snoozed or failed runs committed, want 0", n)
		}
		cs := e.p.Counters()
		if cs.Snoozed != 2 || cs.Failed != 2 || cs.Poisoned != 1 || cs.Succeeded != 0 {
			t.Fatalf("counters %+v, want 2 snoozed, 2 failed, 1 poisoned", cs)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(results) != 4 {
			t.Fatalf("%d AfterConsume calls, want 4", len(results))
		}
		for i, r := range results[:2] {
			if !r.Snoozed || !errors.Is(r.Err, am.ErrSnoozed) || r.Poisoned || r.RetryAt.IsZero() {
				t.Fatalf("result %d: %+v, want a snooze", i, r)
			}
		}
		if r := results[2]; r.Snoozed || !errors.Is(r.Err, am.ErrSnoozeLimit) || errors.Is(r.Err, am.ErrSnoozed) {
			t.Fatalf("result 2: %+v, want a failure matching ErrSnoozeLimit and not ErrSnoozed", r)
		}
	})
}

// A snooze on the last attempt does not poison: it uses no attempt. Config.MaxSnoozes is
// the bound without WithMaxSnoozes.
func TestSnoozeOnLastAttempt(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{MaxAttempts: 1, MaxSnoozes: 3, Logger: slog.New(slog.DiscardHandler)})
		c := &recorder[Job]{fn: func(context.Context, *am.Message[Job]) error { return am.SnoozeFor(time.Second) }}
		if err := am.Register[Job](e.p, c); err != nil {
			t.Fatal(err)
		}
		produceRetryJobs(t, e, Job{N: 1})
		for i := range 3 {
			mustBatch(t, e)
			if e.pending(t) != 1 {
				t.Fatalf("snooze %d on the only attempt: message gone", i+1)
			}
			e.clock.Advance(time.Second)
		}
		mustBatch(t, e) // the fourth snooze: over Config.MaxSnoozes, a failed (last) attempt
		if e.pending(t) != 0 || e.count(t, &am.PoisonedMessage{}) != 1 {
			t.Fatalf("after MaxSnoozes+1 snoozes: %d pending, %d poisoned; want 0, 1", e.pending(t), e.count(t, &am.PoisonedMessage{}))
		}
	})
}

// Hostile snoozes: zero, negative, extreme and past durations and times are due at once;
// over MaxSnoozeDuration they are shortened to it (logged); a snooze joined with another
// error or wrapped deeply still snoozes; joined with ErrPermanent it poisons; a nil
// *SnoozeError is an ordinary failure.
func TestSnoozeHostileDurations(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		var logs syncBuffer
		e := setup(t, dialect, am.Config{MaxSnoozeDuration: 2 * time.Hour, AttemptDelay: 3 * time.Second, DisableBreaker: true, Logger: newTextLogger(&logs)})
		start := e.clock.Now()
		cases := []struct {
			err     error
			due     time.Duration
			snoozed bool
		}{
			{am.SnoozeFor(0), 0, true},
			{am.SnoozeFor(-time.Hour), 0, true},
			{am.SnoozeFor(time.Duration(math.MaxInt64)), 2 * time.Hour, true},
			{am.SnoozeFor(time.Duration(math.MinInt64)), 0, true},
			{am.SnoozeUntil(time.Time{}), 0, true},
			{am.SnoozeUntil(start.Add(30 * time.Minute)), 30 * time.Minute, true},
			{am.SnoozeUntil(time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)), 2 * time.Hour, true},
			{am.SnoozeUntil(start.Add(-time.Hour)), 0, true},
			{am.SnoozeFor(3 * time.Hour), 2 * time.Hour, true},
			{errors.Join(errors.New("busy"), am.SnoozeFor(5*time.Minute)), 5 * time.Minute, true},
			{fmt.Errorf("a: %w", fmt.Errorf("b: %w", am.SnoozeUntil(start.Add(time.Minute)))), time.Minute, true},
			{errors.Join(am.SnoozeFor(time.Minute), am.Permanent(errors.New("bad payload"))), -1, false},
			{(*am.SnoozeError)(nil), 3 * time.Second, false},
		}
		c := &recorder[Job]{fn: func(_ context.Context, m *am.Message[Job]) error { return cases[m.Payload.N].err }}
		if err := am.Register[Job](e.p, c); err != nil {
			t.Fatal(err)
		}
		jobs := make([]Job, len(cases))
		for i := range jobs {
			jobs[i].N = i
		}
		produceRetryJobs(t, e, jobs...)
		if n := mustBatch(t, e); n != len(cases) {
			t.Fatalf("%d ran, want %d", n, len(cases))
		}
		rows := rowsByPayload(t, e)
		for i, tc := range cases {
			r, ok := rows[fmt.Sprintf(`{"n":%d}`, i)]
			if tc.due < 0 {
				if ok {
					t.Errorf("case %d (%v): still pending %+v, want poisoned", i, tc.err, r)
				}
				continue
			}
			wantSnoozes, wantAttempts := 1, 0
			if !tc.snoozed {
				wantSnoozes, wantAttempts = 0, 1
			}
			if !ok || r.AvailableAfter != start.Add(tc.due).UnixMilli() || r.Snoozes != wantSnoozes || r.Attempts != wantAttempts {
				t.Errorf("case %d (%v): row %+v (due now+%dms), want due now+%s, %d snoozes, %d attempts",
					i, tc.err, r, r.AvailableAfter-start.UnixMilli(), tc.due, wantSnoozes, wantAttempts)
			}
		}
		poisoned, err := e.p.ListPoisoned(context.Background(), am.MessageFilter{})
		if err != nil || len(poisoned) != 1 || poisoned[0].Attempts != 1 || !strings.Contains(poisoned[0].LastError, "bad payload") {
			t.Fatalf("poisoned %+v, %v: want the permanent one, on its first run, with its reason", poisoned, err)
		}
		if !strings.Contains(logs.String(), "shortened") {
			t.Fatalf("a snooze over MaxSnoozeDuration was not logged:\n%s", logs.String())
		}
	})
}

// Permanent(err) poisons on the first run with err as the reason, wrapped or not, and
// matches ErrPermanent, *PermanentError and err itself.
func TestPermanentTyped(t *testing.T) {
	t.Parallel()
	errBadEmail := errors.New("invalid e-mail address")
	pe := am.Permanent(errBadEmail)
	var typed *am.PermanentError
	if !errors.Is(pe, am.ErrPermanent) || !errors.Is(pe, errBadEmail) || !errors.As(fmt.Errorf("x: %w", pe), &typed) || typed.Err != errBadEmail {
		t.Fatalf("Permanent(err) = %#v: does not match ErrPermanent, err and *PermanentError", pe)
	}
	if am.Permanent(nil) != am.ErrPermanent {
		t.Fatalf("Permanent(nil) = %v, want ErrPermanent", am.Permanent(nil))
	}
	if s := (*am.PermanentError)(nil).Error(); s == "" {
		t.Fatal("a nil *PermanentError has no text")
	}
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{MaxAttempts: 5, Logger: slog.New(slog.DiscardHandler)})
		c := &recorder[Job]{fn: func(_ context.Context, m *am.Message[Job]) error {
			if m.Payload.N == 0 {
				return am.Permanent(fmt.Errorf("customer %d: %w", m.Payload.N, errBadEmail))
			}
			return fmt.Errorf("handler: %w", am.Permanent(errBadEmail))
		}}
		if err := am.Register[Job](e.p, c); err != nil {
			t.Fatal(err)
		}
		produceRetryJobs(t, e, Job{N: 0}, Job{N: 1})
		mustBatch(t, e)
		poisoned, err := e.p.ListPoisoned(context.Background(), am.MessageFilter{})
		if err != nil || len(poisoned) != 2 {
			t.Fatalf("poisoned %+v, %v: want 2", poisoned, err)
		}
		for _, p := range poisoned {
			if p.Attempts != 1 || !strings.Contains(p.LastError, "invalid e-mail address") || !strings.Contains(p.LastError, "permanent failure") {
				t.Fatalf("poisoned after %d attempts with %q; want 1 attempt, the reason and that it is permanent", p.Attempts, p.LastError)
			}
		}
	})
}
