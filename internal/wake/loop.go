package wake

import (
	"context"
	"time"
)

// Keep, returned by a Loop step, leaves the timer as it is: the step had nothing to do and
// waits for the next signal (or for a timer it set earlier).
const Keep time.Duration = -1

// Loop is the poll loop of a processor. It runs step each time the processor is woken (a
// value on wake, or on extra), or its timer fires, until ctx ends; first is the timer's
// first delay (stagger processors that start together with it). step reports whether a
// wake triggered it, and returns the delay until the timer fires next (0: at once), or Keep.
// A step is never run after ctx has ended.
func Loop(ctx context.Context, first time.Duration, wake, extra <-chan struct{}, step func(woken bool) time.Duration) {
	timer := time.NewTimer(first)
	defer timer.Stop()
	for {
		woken := false
		select {
		case <-ctx.Done():
			return
		case <-wake:
			woken = true
		case <-extra:
		case <-timer.C:
		}
		if ctx.Err() != nil {
			return
		}
		if d := step(woken); d != Keep {
			timer.Reset(d) // since Go 1.23, Reset discards a firing not yet received
		}
	}
}
