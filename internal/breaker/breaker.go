// Package breaker pauses a consumer whose runs keep failing.
//
// A consumer whose dependency is down (or a bad deploy) would otherwise burn every attempt of
// its whole backlog and take the processors' time from healthy consumers: a poison storm.
// After Threshold failed runs in a row a consumer is paused for a cooldown; then one run
// probes it: a success closes its breaker, a failure pauses it again for twice as long, up to
// MaxCooldown. State is per process; the caller decides which errors count as failures.
package breaker

import (
	"sync"
	"sync/atomic"
	"time"
)

// Config sets a Set's thresholds.
type Config struct {
	Threshold   int           // failed runs in a row that pause a consumer (at least 1)
	Cooldown    time.Duration // the first pause
	MaxCooldown time.Duration // the cap of a pause as failed probes double it
	Disabled    bool          // never pause
}

// Set holds the breaker of each consumer of one plugin. It is safe for concurrent use.
type Set struct {
	cfg Config

	mu sync.Mutex
	by map[string]*state
	// tracked is len(by), read without the lock: while no consumer has failed, checking
	// and recording a run costs an atomic load.
	tracked atomic.Int32
}

// state is one consumer's breaker.
type state struct {
	failures  int       // consecutive failed runs since the last success or trip
	trips     int       // consecutive trips; the cooldown doubles with each
	openUntil time.Time // the consumer is paused until then
}

// New returns a Set with every breaker closed.
func New(cfg Config) *Set { return &Set{cfg: cfg, by: map[string]*state{}} }

// PausedUntil reports until when consumer is paused, or the zero time when it may run
// (closed, or half-open after its cooldown).
func (s *Set) PausedUntil(consumer string, now time.Time) time.Time {
	if s.cfg.Disabled || s.tracked.Load() == 0 {
		return time.Time{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.by[consumer]; b != nil && now.Before(b.openUntil) {
		return b.openUntil
	}
	return time.Time{}
}

// Record counts one run of consumer: failed or not. It returns the time until which the
// consumer is now paused when this run tripped its breaker (the zero time otherwise), and
// whether this run was a successful probe that closed a tripped breaker.
func (s *Set) Record(consumer string, failed bool, now time.Time) (until time.Time, recovered bool) {
	if s.cfg.Disabled || (!failed && s.tracked.Load() == 0) {
		return time.Time{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.by[consumer]
	if !failed {
		if b != nil {
			delete(s.by, consumer) // closed: forget the past
			s.tracked.Store(int32(len(s.by)))
			return time.Time{}, b.trips > 0
		}
		return time.Time{}, false
	}
	if b == nil {
		b = &state{}
		s.by[consumer] = b
		s.tracked.Store(int32(len(s.by)))
	}
	b.failures++
	// A failed probe (the first run after a cooldown) trips again at once.
	if b.failures < s.cfg.Threshold && b.trips == 0 {
		return time.Time{}, false
	}
	if now.Before(b.openUntil) {
		return time.Time{}, false // another processor's run tripped it already
	}
	b.trips++
	wait := s.cfg.Cooldown
	for i := 1; i < b.trips && wait < s.cfg.MaxCooldown; i++ {
		wait *= 2
	}
	b.failures = 0
	b.openUntil = now.Add(min(wait, s.cfg.MaxCooldown))
	return b.openUntil, false
}

// Paused returns the consumers paused at now, with the end of each pause.
func (s *Set) Paused(now time.Time) map[string]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]time.Time{}
	for name, b := range s.by {
		if now.Before(b.openUntil) {
			out[name] = b.openUntil
		}
	}
	return out
}
