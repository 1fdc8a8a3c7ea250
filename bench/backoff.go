package main

import (
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// backoffStorm measures healthy throughput while 10,000 always-failing messages are in their
// retry cycle: they have all run (and failed) once when the healthy messages are produced,
// and each is retried up to MaxAttempts 10, the breaker off, so that every retry is run.
// Healthy only (the same measurement without them), then their retries following
// ExponentialBackoff{} (the library's defaults: 10s, 20s, 40s, … up to 1h, jitter 0.25), then
// retried after a fixed 1 ms. Each figure counts from the first healthy message produced
// to the last consumed, processors running all along.
func backoffStorm(c config, schema string) (base, backoff, fixed stat, err error) {
	const doomed = 10_000
	if base, err = measure(c.runs, func() (float64, error) {
		return healthyRateOf(c, schema, 0, am.Config{MaxAttempts: 10, DisableBreaker: true}, true)
	}); err != nil {
		return
	}
	if backoff, err = measure(c.runs, func() (float64, error) {
		return healthyRateOf(c, schema, doomed, am.Config{MaxAttempts: 10, RetryPolicy: am.ExponentialBackoff{}, DisableBreaker: true}, true)
	}); err != nil {
		return
	}
	fixed, err = measure(c.runs, func() (float64, error) {
		return healthyRateOf(c, schema, doomed, am.Config{MaxAttempts: 10, AttemptDelay: time.Millisecond, DisableBreaker: true}, true)
	})
	return
}
