package asyncmonolith

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// manualClock is a minimal Clock for this package's internal tests (the public one,
// asyncmonolithtest.Clock, imports this package).
type manualClock struct {
	mu  sync.Mutex
	now time.Time
	fs  []func()
}

func (c *manualClock) Now() time.Time               { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *manualClock) NewTimer(time.Duration) Timer { panic("unused") }
func (c *manualClock) AfterFunc(_ time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fs = append(c.fs, f)
	return stoppedTimer{}
}
func (c *manualClock) fireAll() {
	c.mu.Lock()
	fs := c.fs
	c.fs = nil
	c.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

type stoppedTimer struct{}

func (stoppedTimer) C() <-chan time.Time      { return nil }
func (stoppedTimer) Stop() bool               { return true }
func (stoppedTimer) Reset(time.Duration) bool { return false }

func TestWithDeadlineOnAClock(t *testing.T) {
	t.Parallel()
	c := &manualClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	parent, cancelParent := context.WithCancel(context.Background())
	defer cancelParent()
	ctx, cancel := withDeadline(c, parent, c.Now().Add(time.Second))
	defer cancel()
	if _, ok := ctx.Deadline(); ok {
		t.Fatal("a clock deadline leaked into Deadline(): network code would read it as real time")
	}
	if ctx.Err() != nil {
		t.Fatal("done before the clock fired")
	}
	c.fireAll()
	<-ctx.Done()
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err() = %v, want DeadlineExceeded", ctx.Err())
	}
	if !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		t.Fatalf("Cause = %v", context.Cause(ctx))
	}

	// Cancelled by its parent first: Canceled, even if the clock fires later.
	ctx2, cancel2 := withDeadline(c, parent, c.Now().Add(time.Second))
	defer cancel2()
	cancelParent()
	<-ctx2.Done()
	c.fireAll()
	if !errors.Is(ctx2.Err(), context.Canceled) {
		t.Fatalf("Err() = %v after the parent was cancelled, want Canceled", ctx2.Err())
	}

	// Cancelled by its own cancel: Canceled.
	ctx3, cancel3 := withDeadline(c, context.Background(), c.Now().Add(time.Second))
	cancel3()
	c.fireAll()
	if !errors.Is(ctx3.Err(), context.Canceled) {
		t.Fatalf("Err() = %v after cancel, want Canceled", ctx3.Err())
	}
}

func TestWithDeadlineOnTheSystemClockIsContextWithDeadline(t *testing.T) {
	t.Parallel()
	d := time.Now().Add(time.Hour)
	ctx, cancel := withDeadline(systemClock{}, context.Background(), d)
	defer cancel()
	if got, ok := ctx.Deadline(); !ok || !got.Equal(d) {
		t.Fatalf("Deadline() = %v, %v", got, ok)
	}
}
