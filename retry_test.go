package asyncmonolith_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"gorm.io/gorm"
)

// pendingRows reads the pending rows, by key.
func pendingRows(t *testing.T, e *env, key func(am.ConsumerMessage) string) map[string]am.ConsumerMessage {
	t.Helper()
	var rows []am.ConsumerMessage
	if err := e.db.Find(&rows).Error; err != nil {
		t.Fatal(err)
	}
	out := map[string]am.ConsumerMessage{}
	for _, r := range rows {
		out[key(r)] = r
	}
	return out
}

// rowsByConsumer reads the pending rows, by consumer type.
func rowsByConsumer(t *testing.T, e *env) map[string]am.ConsumerMessage {
	t.Helper()
	return pendingRows(t, e, func(r am.ConsumerMessage) string { return r.ConsumerType })
}

// rowsByPayload reads the pending rows, by payload.
func rowsByPayload(t *testing.T, e *env) map[string]am.ConsumerMessage {
	t.Helper()
	return pendingRows(t, e, func(r am.ConsumerMessage) string { return r.Payload })
}

func produceRetryJobs(t *testing.T, e *env, jobs ...Job) {
	t.Helper()
	if err := e.db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, jobs).Error }); err != nil {
		t.Fatal(err)
	}
}

// Each retry policy sets the delay it promises on the row (available_after), attempt after
// attempt: ExponentialBackoff with jitter (the value its RetryDelay gives for the message
// id and attempt, within [0.75·d, d]), without jitter (doubling up to its cap), FixedDelay
// per consumer, and Config.AttemptDelay when no policy is set. The failure's log line
// carries the delay.
func TestRetryPolicyDelays(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		var logs syncBuffer
		exp := am.ExponentialBackoff{Base: time.Second, Max: 5 * time.Second}
		e := setup(t, dialect, am.Config{MaxAttempts: 6, AttemptDelay: 3 * time.Second, RetryPolicy: exp, DisableBreaker: true,
			Logger: newTextLogger(&logs)})
		fail := am.ConsumerFunc[Job](func(context.Context, *am.Message[Job]) error { return errors.New("down") })
		exact := am.ExponentialBackoff{Base: time.Second, Max: 5 * time.Second, NoJitter: true}
		for _, r := range []struct {
			name string
			opts []am.ConsumerOption
		}{{"Exp", nil}, {"Exact", []am.ConsumerOption{am.WithRetryPolicy(exact)}}, {"Fixed", []am.ConsumerOption{am.WithRetryPolicy(am.FixedDelay(7 * time.Second))}}} {
			if err := am.Register[Job](e.p, fail, append(r.opts, am.WithName(r.name))...); err != nil {
				t.Fatal(err)
			}
		}
		// Without a policy: Config.AttemptDelay, on a second database.
		plain := setup(t, dialect, am.Config{MaxAttempts: 6, AttemptDelay: 3 * time.Second, DisableBreaker: true})
		if err := am.Register[Job](plain.p, fail, am.WithName("Plain")); err != nil {
			t.Fatal(err)
		}
		produceRetryJobs(t, e, Job{N: 1})
		produceRetryJobs(t, plain, Job{N: 1})
		exactWant := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
		for k := 1; k <= 5; k++ {
			now, plainNow := e.clock.Now(), plain.clock.Now()
			if n := mustBatch(t, e); n != 3 {
				t.Fatalf("run %d: %d messages ran, want 3", k, n)
			}
			mustBatch(t, plain)
			rows := rowsByConsumer(t, e)
			for _, name := range []string{"Exp", "Exact", "Fixed"} {
				if rows[name].Attempts != k {
					t.Fatalf("run %d: %s has %d attempts, want %d", k, name, rows[name].Attempts, k)
				}
			}
			r := rows["Exp"]
			d := exp.RetryDelay(am.MessageInfo{ID: r.ID, Attempt: k}, nil)
			if got, want := r.AvailableAfter, now.Add(d).UnixMilli(); got != want {
				t.Fatalf("run %d: Exp due at %d, want now+%s = %d", k, got, d, want)
			}
			if full := exactWant[k-1]; d > full || d < full*3/4 {
				t.Fatalf("run %d: jittered delay %s outside [%s, %s]", k, d, full*3/4, full)
			}
			if got, want := rows["Exact"].AvailableAfter, now.Add(exactWant[k-1]).UnixMilli(); got != want {
				t.Fatalf("run %d: Exact due at now+%dms, want now+%s", k, got-now.UnixMilli(), exactWant[k-1])
			}
			if got, want := rows["Fixed"].AvailableAfter, now.Add(7*time.Second).UnixMilli(); got != want {
				t.Fatalf("run %d: Fixed due at now+%dms, want now+7s", k, got-now.UnixMilli())
			}
			pr := rowsByConsumer(t, plain)["Plain"]
			if got, want := pr.AvailableAfter, plainNow.Add(3*time.Second).UnixMilli(); got != want || pr.Attempts != k {
				t.Fatalf("run %d: Plain due at now+%dms after %d attempts, want now+3s after %d", k, got-plainNow.UnixMilli(), pr.Attempts, k)
			}
			e.clock.Advance(7 * time.Second)
			plain.clock.Advance(3 * time.Second)
		}
		if !strings.Contains(logs.String(), "retry_delay=7s") || !strings.Contains(logs.String(), "retry_delay=4s") {
			t.Fatalf("the failures' log lines do not carry their delay:\n%s", logs.String())
		}
		mustBatch(t, e)
		if n := e.pending(t); n != 0 {
			t.Fatalf("%d messages left after the last attempt, want 0 (poisoned)", n)
		}
	})
}

// Jittered backoff spreads messages that failed together over [0.75·Base, Base], each at
// the delay RetryDelay gives for its id.
func TestExponentialBackoffSpreads(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		exp := am.ExponentialBackoff{Base: 10 * time.Second}
		e := setup(t, dialect, am.Config{RetryPolicy: exp, DisableBreaker: true})
		if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(context.Context, *am.Message[Job]) error { return errors.New("down") })); err != nil {
			t.Fatal(err)
		}
		jobs := make([]Job, 50)
		for i := range jobs {
			jobs[i].N = i
		}
		produceRetryJobs(t, e, jobs...)
		now := e.clock.Now()
		if n := mustBatch(t, e); n != 50 {
			t.Fatalf("%d ran, want 50", n)
		}
		distinct := map[int64]bool{}
		for _, r := range rowsByPayload(t, e) {
			d := exp.RetryDelay(am.MessageInfo{ID: r.ID, Attempt: 1}, nil)
			if r.AvailableAfter != now.Add(d).UnixMilli() {
				t.Fatalf("message %s due at now+%dms, want now+%s", r.ID, r.AvailableAfter-now.UnixMilli(), d)
			}
			if d < 7500*time.Millisecond || d > 10*time.Second {
				t.Fatalf("delay %s outside [7.5s, 10s]", d)
			}
			distinct[r.AvailableAfter] = true
		}
		if len(distinct) < 40 {
			t.Fatalf("50 failed messages come back at only %d distinct times", len(distinct))
		}
	})
}

// A RetryPolicyFunc gets the attempt that failed and the consumer's error, wrapped as the
// consumer wrapped it (and a panic as a *PanicError); it is not asked on the last attempt.
func TestRetryPolicyFuncGetsAttemptAndError(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		errTransient := errors.New("transient")
		type call struct {
			attempt int
			err     error
		}
		var mu sync.Mutex
		var calls []call
		policy := am.RetryPolicyFunc(func(m am.MessageInfo, err error) time.Duration {
			mu.Lock()
			calls = append(calls, call{m.Attempt, err})
			mu.Unlock()
			if errors.Is(err, errTransient) {
				return time.Duration(m.Attempt) * time.Minute
			}
			if pe := (*am.PanicError)(nil); errors.As(err, &pe) {
				return 42 * time.Second
			}
			return time.Hour
		})
		e := setup(t, dialect, am.Config{MaxAttempts: 3, DisableBreaker: true, Logger: slog.New(slog.DiscardHandler)})
		c := am.ConsumerFunc[Job](func(_ context.Context, m *am.Message[Job]) error {
			switch m.Payload.N {
			case 0:
				return fmt.Errorf("call %d: %w", m.Attempt, errTransient)
			case 1:
				panic("boom")
			}
			return errors.New("other")
		})
		if err := am.Register[Job](e.p, c, am.WithRetryPolicy(policy)); err != nil {
			t.Fatal(err)
		}
		produceRetryJobs(t, e, Job{N: 0}, Job{N: 1}, Job{N: 2})
		for k := 1; k <= 2; k++ {
			now := e.clock.Now()
			mustBatch(t, e)
			rows := rowsByPayload(t, e)
			for payload, d := range map[string]time.Duration{`{"n":0}`: time.Duration(k) * time.Minute, `{"n":1}`: 42 * time.Second, `{"n":2}`: time.Hour} {
				if got, want := rows[payload].AvailableAfter, now.Add(d).UnixMilli(); got != want {
					t.Fatalf("run %d: %s due at now+%dms, want now+%s", k, payload, got-now.UnixMilli(), d)
				}
			}
			e.clock.Advance(time.Hour)
		}
		mu.Lock()
		got := append([]call(nil), calls...)
		mu.Unlock()
		if len(got) != 6 {
			t.Fatalf("policy called %d times, want 6 (3 messages × 2 retried attempts)", len(got))
		}
		wrapped := 0
		for _, c := range got {
			if errors.Is(c.err, errTransient) {
				wrapped++
				if !strings.Contains(c.err.Error(), fmt.Sprintf("call %d", c.attempt)) {
					t.Fatalf("policy got %q for attempt %d", c.err, c.attempt)
				}
			}
		}
		if wrapped != 2 {
			t.Fatalf("policy saw the wrapped error %d times, want 2", wrapped)
		}
		mustBatch(t, e) // the last attempt: poisoned, the policy is not asked
		mu.Lock()
		n := len(calls)
		mu.Unlock()
		if n != 6 || e.pending(t) != 0 {
			t.Fatalf("after the last attempt: %d policy calls (want 6), %d pending (want 0)", n, e.pending(t))
		}
	})
}

// A policy's negative delay means at once, a huge one RetryDelayMax, and a panicking
// policy falls back to Config.AttemptDelay, logged; the processor goes on.
func TestRetryPolicyHostileReturns(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		var logs syncBuffer
		policy := am.RetryPolicyFunc(func(m am.MessageInfo, err error) time.Duration {
			switch {
			case strings.Contains(err.Error(), "n0"):
				return -5 * time.Second
			case strings.Contains(err.Error(), "n1"):
				return time.Duration(math.MaxInt64)
			case strings.Contains(err.Error(), "n2"):
				return time.Duration(math.MinInt64)
			}
			panic("policy bug")
		})
		e := setup(t, dialect, am.Config{RetryPolicy: policy, AttemptDelay: 4 * time.Second, DisableBreaker: true, Logger: newTextLogger(&logs)})
		c := &recorder[Job]{fn: func(_ context.Context, m *am.Message[Job]) error {
			if m.Payload.N == 4 {
				return nil
			}
			return fmt.Errorf("n%d failed", m.Payload.N)
		}}
		if err := am.Register[Job](e.p, c); err != nil {
			t.Fatal(err)
		}
		produceRetryJobs(t, e, Job{N: 0}, Job{N: 1}, Job{N: 2}, Job{N: 3}, Job{N: 4})
		now := e.clock.Now()
		if n := mustBatch(t, e); n != 5 {
			t.Fatalf("%d ran, want 5", n)
		}
		rows := rowsByPayload(t, e)
		for payload, d := range map[string]time.Duration{`{"n":0}`: 0, `{"n":1}`: am.RetryDelayMax, `{"n":2}`: 0, `{"n":3}`: 4 * time.Second} {
			r, ok := rows[payload]
			if !ok || r.AvailableAfter != now.Add(d).UnixMilli() || r.Attempts != 1 {
				t.Fatalf("%s: %+v, want due at now+%s after 1 attempt", payload, r, d)
			}
		}
		if _, ok := rows[`{"n":4}`]; ok || len(rows) != 4 {
			t.Fatalf("rows %v: the successful message must be gone", rows)
		}
		if s := logs.String(); !strings.Contains(s, "retry policy panicked") || !strings.Contains(s, "policy bug") || !strings.Contains(s, "clamped") {
			t.Fatalf("log does not report the panic and the clamping:\n%s", s)
		}
		// The processor still works: the due ones run again.
		if n := mustBatch(t, e); n != 2 {
			t.Fatalf("second batch ran %d, want the 2 due at once", n)
		}
	})
}

// Invalid retry and snooze settings are refused with an error naming the field.
func TestRetryAndSnoozeValidation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg   am.Config
		field string
	}{
		{am.Config{RetryPolicy: am.ExponentialBackoff{Base: -time.Second}}, "RetryPolicy.Base"},
		{am.Config{RetryPolicy: am.ExponentialBackoff{Max: -1}}, "RetryPolicy.Max"},
		{am.Config{RetryPolicy: am.ExponentialBackoff{Base: time.Minute, Max: time.Second}}, "RetryPolicy.Max"},
		{am.Config{RetryPolicy: &am.ExponentialBackoff{Jitter: math.NaN()}}, "RetryPolicy.Jitter"},
		{am.Config{RetryPolicy: am.ExponentialBackoff{Jitter: 1.5}}, "RetryPolicy.Jitter"},
		{am.Config{RetryPolicy: am.ExponentialBackoff{Base: am.RetryDelayMax + 1}}, "RetryPolicy.Base"},
		{am.Config{RetryPolicy: am.FixedDelay(-1)}, "RetryPolicy"},
		{am.Config{RetryPolicy: am.RetryPolicyFunc(nil)}, "RetryPolicy"},
		{am.Config{RetryPolicy: (*am.ExponentialBackoff)(nil)}, "RetryPolicy"},
		{am.Config{MaxSnoozes: -1}, "MaxSnoozes"},
		{am.Config{MaxSnoozeDuration: -time.Second}, "MaxSnoozeDuration"},
		{am.Config{MaxSnoozeDuration: am.RetryDelayMax + 1}, "MaxSnoozeDuration"},
	} {
		db := testdb.Open(t, "sqlite")
		err := db.Use(am.New(tc.cfg))
		var ce *am.ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field || !errors.Is(err, am.ErrInvalidConfig) {
			t.Errorf("%+v: err = %v, want a ConfigError for %s", tc.cfg, err, tc.field)
		}
	}
	p := am.New(am.Config{})
	for _, tc := range []struct {
		opt  am.ConsumerOption
		want string
	}{
		{am.WithRetryPolicy(am.ExponentialBackoff{Jitter: 2}), "ExponentialBackoff.Jitter"},
		{am.WithRetryPolicy(am.ExponentialBackoff{Base: -1}), "ExponentialBackoff.Base"},
		{am.WithRetryPolicy(am.FixedDelay(-time.Second)), "FixedDelay(-1s)"},
		{am.WithRetryPolicy(am.RetryPolicyFunc(nil)), "nil RetryPolicyFunc"},
		{am.WithMaxSnoozes(-1), "WithMaxSnoozes(-1)"},
	} {
		err := am.Register[Job](p, am.ConsumerFunc[Job](func(context.Context, *am.Message[Job]) error { return nil }), tc.opt)
		if !errors.Is(err, am.ErrInvalidOption) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Register: err = %v, want ErrInvalidOption naming %s", err, tc.want)
		}
	}
	// Valid settings pass, the zero ExponentialBackoff (all defaults) included.
	db := testdb.Open(t, "sqlite")
	if err := db.Use(am.New(am.Config{RetryPolicy: am.ExponentialBackoff{}, MaxSnoozes: 3, MaxSnoozeDuration: time.Minute})); err != nil {
		t.Fatal(err)
	}
	if d := (am.ExponentialBackoff{NoJitter: true}).RetryDelay(am.MessageInfo{Attempt: 1000}, nil); d != am.ExponentialBackoffMaxDefault {
		t.Fatalf("attempt 1000 of the default backoff waits %s, want its cap %s", d, am.ExponentialBackoffMaxDefault)
	}
	if d := (am.ExponentialBackoff{NoJitter: true}).RetryDelay(am.MessageInfo{Attempt: 3}, nil); d != 4*am.ExponentialBackoffBaseDefault {
		t.Fatalf("attempt 3 of the default backoff waits %s, want %s", d, 4*am.ExponentialBackoffBaseDefault)
	}
}
