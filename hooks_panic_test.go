package asyncmonolith_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
)

// safeBuffer is a bytes.Buffer for a logger written by several goroutines.
type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A hook that panics, or a BeforeConsume that returns a nil context, is an observer's bug:
// it is logged and skipped, and the message is still consumed and recorded. Before, a
// panic in a hook run on a processor's goroutine took the whole process down.
func TestPanickingHooksDoNotStopProcessing(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		var logs safeBuffer
		var calls sync.Map
		cfg := am.Config{Logger: newTextLogger(&logs), Hooks: am.Hooks{
			BeforeConsume: func(ctx context.Context, m am.MessageInfo) context.Context {
				calls.Store("before", true)
				if m.InsertID == "nil-ctx" {
					return nil // the careless hook under test
				}
				panic("before consume")
			},
			AfterConsume: func(context.Context, am.MessageInfo, am.Result) {
				calls.Store("after", true)
				panic("after consume")
			},
			ScheduleFired: func(context.Context, string, string) {
				calls.Store("fired", true)
				panic("schedule fired")
			},
		}}
		e := setup(t, dialect, cfg)
		r := &recorder[Job]{}
		if err := am.Register[Job](e.p, am.ConsumerFunc[Job](r.Consume)); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := am.ProduceNow(ctx, e.db, Job{N: 1}); err != nil {
			t.Fatal(err)
		}
		if err := am.ProduceNow(ctx, e.db, Job{N: 2}, am.InsertID("nil-ctx")); err != nil {
			t.Fatal(err)
		}
		if _, err := am.Schedule(ctx, e.db, Job{N: 3}, "@every 1m"); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(61e9) // the schedule is due
		for {
			n, err := e.p.ProcessBatch(ctx)
			if err != nil {
				t.Fatal(err)
			}
			fired, err := e.p.FireSchedules(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 && fired == 0 {
				break
			}
		}
		if r.count() != 3 {
			t.Fatalf("consumed %d messages, want 3 (two produced, one scheduled)", r.count())
		}
		if e.pending(t) != 0 {
			t.Fatalf("%d messages left pending: an outcome was not recorded", e.pending(t))
		}
		for _, k := range []string{"before", "after", "fired"} {
			if _, ok := calls.Load(k); !ok {
				t.Fatalf("hook %s was not called", k)
			}
		}
		for _, want := range []string{"hook=BeforeConsume", "hook=AfterConsume", "hook=ScheduleFired", "returned a nil context"} {
			if !strings.Contains(logs.String(), want) {
				t.Errorf("the log does not say %q:\n%s", want, logs.String())
			}
		}
	})
}
