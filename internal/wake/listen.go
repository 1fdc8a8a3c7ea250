package wake

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// ErrStopListening, returned by a listen function, means there is nothing to listen to
// (a database without commit notifications): Listen returns without retrying.
var ErrStopListening = errors.New("wake: nothing to listen to")

// healthy is how long a listener must have run for its next failure to count as a new
// outage (restarting the backoff) rather than one more failed reconnect.
const healthy = time.Second

// Listen runs listen until ctx ends, reconnecting with Backoff when it fails: listen blocks
// while it listens for other processes' commits (and calls Notify for each). Processors
// keep polling meanwhile, so a failing listener costs latency, not messages.
func Listen(ctx context.Context, log *slog.Logger, listen func(context.Context) error) {
	for failures := 0; ; failures++ {
		started := time.Now()
		err := listen(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > healthy {
			failures = 0 // it was listening: this is a new outage, not the same one
		}
		if errors.Is(err, ErrStopListening) {
			log.DebugContext(ctx, "asyncmonolith: no commit notifications; processors poll", "reason", err)
			return
		}
		wait := Backoff(failures+1, 100*time.Millisecond, 30*time.Second)
		log.WarnContext(ctx, "asyncmonolith: notification listener failed; processors poll meanwhile", "error", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
