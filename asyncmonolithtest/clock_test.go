package asyncmonolithtest_test

import (
	"sync"
	"testing"
	"time"

	"github.com/asyncmonolith/asyncmonolith/asyncmonolithtest"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestClockTimersFireInDueOrderAsTheClockMoves(t *testing.T) {
	t.Parallel()
	c := asyncmonolithtest.NewClock(t0)
	late := c.NewTimer(3 * time.Second)
	early := c.NewTimer(time.Second)
	var mu sync.Mutex
	var order []time.Time
	done := make(chan struct{})
	c.AfterFunc(2*time.Second, func() {
		mu.Lock()
		order = append(order, c.Now())
		mu.Unlock()
		close(done)
	})
	if n := c.Timers(); n != 3 {
		t.Fatalf("Timers() = %d, want 3", n)
	}
	select {
	case <-early.C():
		t.Fatal("a timer fired before the clock moved")
	default:
	}
	c.Advance(1500 * time.Millisecond)
	if got := <-early.C(); !got.Equal(t0.Add(time.Second)) {
		t.Fatalf("early timer got %v, want its due time %v", got, t0.Add(time.Second))
	}
	c.Advance(time.Second) // now t0+2.5s: the AfterFunc fires, the late timer waits
	<-done
	if len(order) != 1 || !order[0].Equal(t0.Add(2500*time.Millisecond)) && !order[0].Equal(t0.Add(2*time.Second)) {
		t.Fatalf("AfterFunc saw %v", order)
	}
	select {
	case <-late.C():
		t.Fatal("the late timer fired early")
	default:
	}
	if next, ok := c.NextTimer(); !ok || !next.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("NextTimer() = %v, %v", next, ok)
	}
	c.Advance(time.Second)
	if got := <-late.C(); !got.Equal(t0.Add(3 * time.Second)) {
		t.Fatalf("late timer got %v", got)
	}
	if !c.Now().Equal(t0.Add(3500 * time.Millisecond)) {
		t.Fatalf("Now() = %v after advancing 3.5s", c.Now())
	}
}

func TestClockStopAndResetLeaveNoStaleValue(t *testing.T) {
	t.Parallel()
	c := asyncmonolithtest.NewClock(t0)
	tm := c.NewTimer(time.Second)
	if !tm.Stop() {
		t.Fatal("Stop of an active timer reported false")
	}
	if tm.Stop() {
		t.Fatal("second Stop reported true")
	}
	c.Advance(time.Hour)
	select {
	case <-tm.C():
		t.Fatal("a stopped timer fired")
	default:
	}
	// Fired but not received, then Reset: the old value is gone (Go 1.23 timers).
	tm.Reset(time.Second)
	c.Advance(time.Second)
	if tm.Reset(time.Minute) {
		t.Fatal("Reset of a fired timer reported it active")
	}
	select {
	case <-tm.C():
		t.Fatal("a stale value was received after Reset")
	default:
	}
	c.Advance(time.Minute)
	<-tm.C()
	if c.Timers() != 0 {
		t.Fatalf("Timers() = %d after every timer fired", c.Timers())
	}
	// Zero or negative fires at once.
	z := c.NewTimer(0)
	<-z.C()
	ran := make(chan struct{})
	c.AfterFunc(-time.Second, func() { close(ran) })
	<-ran
}

func TestClockSetBackFiresNothing(t *testing.T) {
	t.Parallel()
	c := asyncmonolithtest.NewClock(t0)
	tm := c.NewTimer(time.Minute)
	c.Set(t0.Add(-time.Hour))
	select {
	case <-tm.C():
		t.Fatal("moving back fired a timer")
	default:
	}
	c.Set(t0.Add(time.Minute))
	<-tm.C()
	defer func() {
		if recover() == nil {
			t.Fatal("Advance(-1) did not panic")
		}
	}()
	c.Advance(-1)
}
