package asyncmonolithtest

import (
	"slices"
	"sync"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// Clock is a clock for asyncmonolith.Config.Clock that moves only when a test moves it.
// Due times, breaker cooldowns, consumer timeouts, AbandonGrace and Message.Tx's deadline
// all read it, so a test of a timeout advances the clock instead of waiting (the polls and
// database timeouts stay on the system clock: see asyncmonolith.Clock). Safe for
// concurrent use.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	seq    uint64
	timers []*clockTimer // active timers
}

var _ am.Clock = (*Clock)(nil)

// NewClock returns a clock reading start.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now reads the clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d, firing on the way, in due order, every timer that
// falls due (the clock reads each timer's due time while it fires). A negative d panics.
func (c *Clock) Advance(d time.Duration) {
	if d < 0 {
		panic("asyncmonolithtest: Clock.Advance with a negative duration")
	}
	c.mu.Lock()
	target := c.now.Add(d)
	c.mu.Unlock()
	c.moveTo(target)
}

// Set moves the clock to t. Moving forward fires the timers that fall due, as Advance;
// moving back fires none (a timer then fires when the clock reaches its due time again).
func (c *Clock) Set(t time.Time) { c.moveTo(t) }

// Timers reports how many timers are waiting to fire: tests use it to wait until the code
// under test has set the timer they are about to fire.
func (c *Clock) Timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// NextTimer returns the due time of the next timer to fire, or false when none waits.
func (c *Clock) NextTimer() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.timers) == 0 {
		return time.Time{}, false
	}
	return c.timers[0].at, true
}

func (c *Clock) moveTo(target time.Time) {
	for {
		c.mu.Lock()
		if len(c.timers) == 0 || c.timers[0].at.After(target) {
			c.now = target
			c.mu.Unlock()
			return
		}
		t := c.timers[0]
		c.timers = c.timers[1:]
		t.active = false
		if t.at.After(c.now) {
			c.now = t.at
		}
		now := c.now
		c.mu.Unlock()
		t.fire(now)
	}
}

// NewTimer returns a timer that fires when the clock has moved d past now.
func (c *Clock) NewTimer(d time.Duration) am.Timer {
	t := &clockTimer{c: c, ch: make(chan time.Time, 1)}
	t.Reset(d)
	return t
}

// AfterFunc calls f in its own goroutine when the clock has moved d past now.
func (c *Clock) AfterFunc(d time.Duration, f func()) am.Timer {
	t := &clockTimer{c: c, f: f}
	t.Reset(d)
	return t
}

// clockTimer is a timer of a Clock.
type clockTimer struct {
	c      *Clock
	ch     chan time.Time // nil for AfterFunc
	f      func()
	at     time.Time // guarded by c.mu
	seq    uint64    // orders timers due at the same time by creation
	active bool      // guarded by c.mu
}

func (t *clockTimer) C() <-chan time.Time { return t.ch }

func (t *clockTimer) fire(now time.Time) {
	if t.f != nil {
		go t.f()
		return
	}
	select {
	case t.ch <- now:
	default: // a value not received yet stays, as with time.Timer's buffered channel of old
	}
}

// Stop stops the timer; like a time.Timer since Go 1.23, no stale value is received after it.
func (t *clockTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.removeLocked()
	t.drain()
	return was
}

// Reset makes the timer fire when the clock has moved d past now; with d of zero or less it
// fires at once.
func (t *clockTimer) Reset(d time.Duration) bool {
	c := t.c
	c.mu.Lock()
	was := t.removeLocked()
	t.drain()
	t.at = c.now.Add(d)
	c.seq++
	t.seq = c.seq
	t.active = true
	i, _ := slices.BinarySearchFunc(c.timers, t, func(a, b *clockTimer) int {
		if n := a.at.Compare(b.at); n != 0 {
			return n
		}
		return cmpSeq(a.seq, b.seq)
	})
	c.timers = slices.Insert(c.timers, i, t)
	due := d <= 0
	now := c.now
	if due {
		c.timers = slices.Delete(c.timers, i, i+1)
		t.active = false
	}
	c.mu.Unlock()
	if due {
		t.fire(now)
	}
	return was
}

func cmpSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (t *clockTimer) removeLocked() bool {
	if !t.active {
		return false
	}
	t.active = false
	if i := slices.Index(t.c.timers, t); i >= 0 {
		t.c.timers = slices.Delete(t.c.timers, i, i+1)
	}
	return true
}

func (t *clockTimer) drain() {
	if t.ch == nil {
		return
	}
	select {
	case <-t.ch:
	default:
	}
}
