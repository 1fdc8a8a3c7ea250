package asyncmonolith_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// A consumer that wrote through Message.Tx, ignored its timeout and returns success just
// as its AbandonGrace timer fires: whichever wins, the message's database effects happen
// exactly once or not at all — its success commits its write with the message's delete,
// or its abandonment rolls the write back and retries the message (one attempt). Never a
// committed write beside a retried message, never a deleted message without its write.
func TestReviewMessageTxSuccessRacesAbandonGrace(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		const timeout, grace = time.Minute, time.Second
		n := 8
		if !caps(dialect).RowLocks() {
			n = 1 // one writer at a time: a Message.Tx holds SQLite's write lock until its run ends
		}
		e := setup(t, dialect, am.Config{ConsumerConcurrency: n, ConsumerTimeout: timeout, AbandonGrace: grace,
			DisableBreaker: true, MaxMessageTxs: n, AttemptDelay: time.Hour})
		if err := e.db.AutoMigrate(&Audit{}); err != nil {
			t.Fatal(err)
		}
		var wrote atomic.Int64
		fired := make(chan struct{})
		closed := false
		t.Cleanup(func() { // a failure before the race must not leave the consumers waiting
			if !closed {
				close(fired)
			}
		})
		if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
			if err := m.Tx.Create(&Audit{Msg: m.ID}).Error; err != nil {
				return err
			}
			wrote.Add(1)
			<-ctx.Done() // its timeout
			<-fired      // then returns as AbandonGrace passes
			return nil
		}), am.WithName("TxRacer")); err != nil {
			t.Fatal(err)
		}
		jobs := make([]Job, n)
		for i := range jobs {
			jobs[i].N = i
		}
		produceRetryJobs(t, e, jobs...)
		wait := e.batchAsync(t)
		// Each run has its timeout's timer and its Message.Tx deadline's; once the timeouts
		// fire, the AbandonGrace timers take their place.
		eventually(t, func() bool { return wrote.Load() == int64(n) && e.clock.Timers() >= n }, "every consumer wrote")
		timers := e.clock.Timers()
		e.clock.Advance(timeout)
		e.advanceWhenTimers(t, timers, grace, func() bool { return true })
		closed = true
		close(fired)
		wait()
		var audits []Audit
		if err := e.db.Find(&audits).Error; err != nil {
			t.Fatal(err)
		}
		written := map[string]bool{}
		for _, a := range audits {
			written[a.Msg] = true
		}
		var left []am.ConsumerMessage
		if err := e.db.Find(&left).Error; err != nil {
			t.Fatal(err)
		}
		for _, r := range left {
			if written[r.ID] || r.Attempts != 1 {
				t.Errorf("message %s retried (%d attempts) with its Message.Tx write committed %v; want 1 attempt, no write", r.ID, r.Attempts, written[r.ID])
			}
		}
		if len(audits)+len(left) != n {
			t.Errorf("%d writes committed and %d messages retried, want %d in all (each message one or the other)", len(audits), len(left), n)
		}
	})
}
