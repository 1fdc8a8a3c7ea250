package wake

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

func TestWakerWakesEverySubscriberOnce(t *testing.T) {
	t.Parallel()
	w := New()
	a, b := w.Subscribe(), w.Subscribe()
	w.Notify()
	w.Notify() // absorbed by the pending wake
	for _, ch := range []chan struct{}{a, b} {
		select {
		case <-ch:
		default:
			t.Fatal("a subscriber was not woken")
		}
		select {
		case <-ch:
			t.Fatal("two wakes pending on one subscriber")
		default:
		}
	}
	w.Unsubscribe(a)
	w.Notify()
	select {
	case <-a:
		t.Fatal("an unsubscribed channel was woken")
	default:
	}
	<-b
}

func TestJitterAndBackoffBounds(t *testing.T) {
	t.Parallel()
	if Jitter(0) != 0 || Jitter(-time.Second) != 0 {
		t.Fatal("Jitter of a non-positive duration is not 0")
	}
	for range 1000 {
		if d := Jitter(time.Second); d < 800*time.Millisecond || d > 1200*time.Millisecond {
			t.Fatalf("Jitter(1s) = %v, outside ±20 %%", d)
		}
	}
	if d := Backoff(1, 0, time.Second); d < 8*time.Millisecond || d > 12*time.Millisecond {
		t.Fatalf("Backoff(1) = %v, want ~10ms (the floor)", d)
	}
	if d := Backoff(4, 100*time.Millisecond, time.Hour); d < 640*time.Millisecond || d > 960*time.Millisecond {
		t.Fatalf("Backoff(4, 100ms) = %v, want ~800ms", d)
	}
	if d := Backoff(100, 100*time.Millisecond, time.Second); d > 1200*time.Millisecond {
		t.Fatalf("Backoff(100) = %v, over the cap", d)
	}
}

func TestListenStopsOnErrStopListeningAndRetriesOtherErrors(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var calls atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		Listen(context.Background(), log, func(context.Context) error {
			if calls.Add(1) < 3 {
				return errors.New("connection refused")
			}
			return ErrStopListening
		})
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("Listen did not return after ErrStopListening")
	}
	if calls.Load() != 3 {
		t.Fatalf("listen called %d times, want 3 (two failures retried)", calls.Load())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	Listen(ctx, log, func(context.Context) error { return errors.New("down") }) // returns: ctx ended
}

func TestLoopRunsStepOnWakeExtraAndTimer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	wakeCh, extra := make(chan struct{}, 1), make(chan struct{}, 1)
	type call struct {
		woken bool
	}
	calls := make(chan call, 10)
	delays := make(chan time.Duration, 10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Loop(ctx, time.Hour, wakeCh, extra, func(woken bool) time.Duration {
			calls <- call{woken}
			return <-delays
		})
	}()
	wakeCh <- struct{}{}
	if c := <-calls; !c.woken {
		t.Fatal("a wake ran the step with woken false")
	}
	delays <- Keep // the first timer (an hour) stays
	extra <- struct{}{}
	if c := <-calls; c.woken {
		t.Fatal("an extra signal ran the step with woken true")
	}
	delays <- 0 // fire at once
	if c := <-calls; c.woken {
		t.Fatal("the timer ran the step with woken true")
	}
	delays <- time.Hour
	cancel()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("Loop did not return when its context ended")
	}
	select {
	case c := <-calls:
		t.Fatalf("a step ran after the context ended: %+v", c)
	default:
	}
}
