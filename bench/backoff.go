package main

import (
	"sort"
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
//
// The three run in turn (base, backoff, fixed, base, …), so that a machine whose load
// drifts during the section weighs on each alike.
func backoffStorm(c config, schema string) (base, backoff, fixed stat, err error) {
	const doomed = 10_000
	stats, err := measureInTurn(c.runs,
		func() (float64, error) {
			return healthyRateOf(c, schema, 0, am.Config{MaxAttempts: 10, DisableBreaker: true}, true)
		},
		func() (float64, error) {
			return healthyRateOf(c, schema, doomed, am.Config{MaxAttempts: 10, RetryPolicy: am.ExponentialBackoff{}, DisableBreaker: true}, true)
		},
		func() (float64, error) {
			return healthyRateOf(c, schema, doomed, am.Config{MaxAttempts: 10, AttemptDelay: time.Millisecond, DisableBreaker: true}, true)
		})
	if err != nil {
		return
	}
	return stats[0], stats[1], stats[2], nil
}

// measureInTurn is measure of several figures, their runs taken in turn.
func measureInTurn(runs int, fs ...func() (float64, error)) ([]stat, error) {
	xs := make([][]float64, len(fs))
	for range runs {
		for i, f := range fs {
			x, err := f()
			if err != nil {
				return nil, err
			}
			xs[i] = append(xs[i], x)
		}
	}
	out := make([]stat, len(fs))
	for i, v := range xs {
		sort.Float64s(v)
		out[i] = stat{v[0], v[len(v)/2], v[len(v)-1]}
	}
	return out, nil
}
