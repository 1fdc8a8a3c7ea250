// Package wake is how processors learn that there may be work: a Waker that a commit in
// this process (or a listener hearing another process's commit) signals, and the pacing of
// polls between signals (Jitter, Backoff).
package wake

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Waker wakes subscribed processors at once, instead of leaving new messages to their next
// poll. It is safe for concurrent use.
type Waker struct {
	mu   sync.Mutex
	subs map[chan struct{}]struct{}
}

// New returns a Waker without subscribers.
func New() *Waker { return &Waker{subs: map[chan struct{}]struct{}{}} }

// Subscribe returns a channel that receives a value after Notify; one pending value absorbs
// further wakes.
func (w *Waker) Subscribe() chan struct{} {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	w.subs[ch] = struct{}{}
	w.mu.Unlock()
	return ch
}

// Unsubscribe stops waking ch.
func (w *Waker) Unsubscribe(ch chan struct{}) {
	w.mu.Lock()
	delete(w.subs, ch)
	w.mu.Unlock()
}

// Notify wakes every subscriber without blocking.
func (w *Waker) Notify() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Jitter returns d ± 20 %, so that processors of many instances do not poll in lockstep.
func Jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d*8/10 + time.Duration(rand.Int64N(int64(d)*4/10+1))
}

// Backoff grows from lo (at least 10 ms) towards hi, doubling with each consecutive
// failure (a database that is down), with Jitter.
func Backoff(failures int, lo, hi time.Duration) time.Duration {
	d := max(lo, 10*time.Millisecond)
	for i := 1; i < failures && d < hi; i++ {
		d *= 2
	}
	return Jitter(min(d, hi))
}
