package asyncmonolith_test

import (
	"context"
	"errors"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// TestStartAgainAfterCancelledStart: a cancelled Start context stops the processors (a
// hard stop); the plugin is then stopped, so a new Start works, and Stop neither hangs nor
// claims a graceful stop.
func TestStartAgainAfterCancelledStart(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		r := &recorder[Job]{}
		if err := am.Register[Job](e.p, am.ConsumerFunc[Job](r.Consume)); err != nil {
			t.Fatal(err)
		}
		bg := context.Background()
		consumed := func(n int) {
			t.Helper()
			if err := am.ProduceNow(bg, e.db, Job{N: n}); err != nil {
				t.Fatal(err)
			}
			// By payload, not by count: a batch that a cancelled Start context rolled back runs
			// its messages again.
			eventually(t, func() bool {
				for _, m := range r.messages() {
					if m.Payload.N == n {
						return true
					}
				}
				return false
			}, "the running processors consumed the message")
		}

		// Cancel, then Start again at once: the old processors may still be returning.
		ctx, cancel := context.WithCancel(bg)
		if err := e.p.Start(ctx); err != nil {
			t.Fatal(err)
		}
		consumed(1)
		cancel()
		if err := e.p.Start(bg); err != nil {
			t.Fatalf("Start after the last Start's context was cancelled: %v", err)
		}
		consumed(2)
		if err := e.p.Start(bg); !errors.Is(err, am.ErrAlreadyStarted) {
			t.Fatalf("Start while running: %v, want ErrAlreadyStarted", err)
		}
		if err := e.p.Stop(bg); err != nil {
			t.Fatalf("graceful Stop: %v", err)
		}

		// Cancel, then Stop: it returns, and says the processors were not stopped by it.
		ctx, cancel = context.WithCancel(bg)
		if err := e.p.Start(ctx); err != nil {
			t.Fatal(err)
		}
		consumed(3)
		cancel()
		stopCtx, stopCancel := context.WithTimeout(bg, 20*time.Second)
		defer stopCancel()
		err := e.p.Stop(stopCtx)
		if !errors.Is(err, am.ErrNotStarted) || !errors.Is(err, context.Canceled) || stopCtx.Err() != nil {
			t.Fatalf("Stop after a cancelled Start = %v, want ErrNotStarted naming the cancelled context", err)
		}
		if err := e.p.Stop(bg); !errors.Is(err, am.ErrNotStarted) {
			t.Fatalf("second Stop = %v, want ErrNotStarted", err)
		}

		// And once the processors are gone by themselves, Start works as well.
		ctx, cancel = context.WithCancel(bg)
		if err := e.p.Start(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		eventually(t, func() bool {
			err := e.p.Start(bg)
			if errors.Is(err, am.ErrAlreadyStarted) {
				return false
			}
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			return true
		}, "Start works after a cancelled Start")
		consumed(4)
		if err := e.p.Stop(bg); err != nil {
			t.Fatalf("graceful Stop: %v", err)
		}

		// A Start given a context that is already done starts nothing.
		if err := e.p.Start(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("Start with a cancelled context = %v, want context.Canceled", err)
		}
		if err := e.p.Stop(bg); !errors.Is(err, am.ErrNotStarted) {
			t.Fatalf("Stop after a refused Start = %v, want ErrNotStarted", err)
		}
	})
}
