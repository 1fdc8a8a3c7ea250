package asyncmonolith

import "sync"

// waker lets a commit that produced messages wake this process's processors at once,
// instead of leaving the messages to the next poll.
type waker struct {
	mu   sync.Mutex
	subs map[chan struct{}]struct{}
}

func newWaker() *waker { return &waker{subs: map[chan struct{}]struct{}{}} }

func (w *waker) subscribe() chan struct{} {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	w.subs[ch] = struct{}{}
	w.mu.Unlock()
	return ch
}

func (w *waker) unsubscribe(ch chan struct{}) {
	w.mu.Lock()
	delete(w.subs, ch)
	w.mu.Unlock()
}

// notify wakes every subscriber without blocking; a wake already pending absorbs this one.
func (w *waker) notify() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
