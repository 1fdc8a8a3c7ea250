package asyncmonolith_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"gorm.io/gorm"
)

// Lease settings of the claiming instance in these tests: its longest consumer timeout
// (30 s, above ConsumerTimeout), AbandonGrace and LeaseMargin. A message it claims
// is due again for anyone at claim time + leaseLength, by the claimant's clock.
const (
	leaseTimeout = 30 * time.Second
	leaseLength  = leaseTimeout + time.Second + 10*time.Second
)

func leaseConfig(cfg am.Config) am.Config {
	cfg.ConsumerTimeout = 5 * time.Second
	cfg.AbandonGrace = time.Second
	cfg.LeaseMargin = 10 * time.Second
	return cfg
}

// forDialects runs fn as a parallel subtest on each of the given databases.
func forDialects(t *testing.T, dialects []string, fn func(t *testing.T, dialect string)) {
	t.Helper()
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			fn(t, d)
		})
	}
}

// TestStaleCompletionIsRefused: instance A claims a message and its consumer stalls past
// A's lease; instance B (its clock past A's lease end) claims the same message and
// completes it, writing through its Message.Tx. When A's consumer then returns nil, A's
// completion is refused (ErrLeaseLost through AfterConsume, Counters.LeaseLost) and A's
// Message.Tx writes roll back: exactly B's write exists, the message is gone, nothing is
// poisoned. A writes before it stalls (holding its Message.Tx open: not on SQLite, where
// that transaction holds the only write lock) or after B has completed.
func TestStaleCompletionIsRefused(t *testing.T) {
	t.Parallel()
	for _, order := range []struct {
		name       string
		writeFirst bool
		dialects   []string
	}{
		{"WriteThenStall", true, []string{"postgres", "mysql"}},
		{"StallThenWrite", false, []string{"postgres", "mysql", "sqlite"}},
	} {
		t.Run(order.name, func(t *testing.T) {
			t.Parallel()
			forDialects(t, order.dialects, func(t *testing.T, dialect string) {
				var mu sync.Mutex
				var resultsA []am.Result
				cfgA := leaseConfig(am.Config{Hooks: am.Hooks{AfterConsume: func(ctx context.Context, m am.MessageInfo, r am.Result) {
					mu.Lock()
					resultsA = append(resultsA, r)
					mu.Unlock()
				}}})
				e := setup(t, dialect, quiet(cfgA)) // instance A, on e.clock
				if err := e.db.AutoMigrate(&Written{}); err != nil {
					t.Fatal(err)
				}
				started := make(chan struct{}, 1)
				release := make(chan struct{})
				write := func(tx *gorm.DB, by string) error { return tx.Create(&Written{N: 1, By: by}).Error }
				if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
					if order.writeFirst {
						if err := write(m.Tx, "A"); err != nil {
							return err
						}
					}
					started <- struct{}{}
					select {
					case <-release:
					case <-ctx.Done():
						return ctx.Err()
					}
					if !order.writeFirst {
						return write(m.Tx, "A")
					}
					return nil
				}), am.WithName("Leased"), am.WithTimeout(leaseTimeout)); err != nil {
					t.Fatal(err)
				}

				clockB := newClock()
				clockB.Advance(leaseLength + time.Millisecond)
				b := instance(t, e.db, dialect, quiet(am.Config{Clock: clockB}))
				var attemptsB []int
				if err := am.Register[Job](b, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
					mu.Lock()
					attemptsB = append(attemptsB, m.Attempt)
					mu.Unlock()
					return write(m.Tx, "B")
				}), am.WithName("Leased")); err != nil {
					t.Fatal(err)
				}

				if err := am.ProduceNow(context.Background(), e.db, Job{N: 1}); err != nil {
					t.Fatal(err)
				}
				type batchResult struct {
					n   int
					err error
				}
				doneA := make(chan batchResult, 1)
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					n, err := e.p.ProcessBatch(ctx)
					doneA <- batchResult{n, err}
				}()
				released := false
				defer func() {
					if !released {
						close(release)
					}
				}()
				select {
				case <-started:
				case r := <-doneA:
					t.Fatalf("A's batch ended (%d, %v) before its consumer ran", r.n, r.err)
				case <-time.After(30 * time.Second): // generous: a loaded CI machine
					t.Fatal("A's consumer did not start")
				}

				ctxB, cancelB := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancelB()
				if n, err := b.ProcessBatch(ctxB); err != nil || n != 1 {
					t.Fatalf("B (past A's lease end) ProcessBatch = %d, %v; want 1, nil", n, err)
				}
				if got := e.pending(t); got != 0 {
					t.Fatalf("B completed, yet %d messages pending", got)
				}
				released = true
				close(release)
				var ra batchResult
				select {
				case ra = <-doneA:
				case <-time.After(20 * time.Second):
					t.Fatal("A's batch did not end after its consumer returned")
				}
				t.Logf("A's ProcessBatch = %d, %v", ra.n, ra.err)

				mu.Lock()
				defer mu.Unlock()
				if len(resultsA) != 1 || !errors.Is(resultsA[0].Err, am.ErrLeaseLost) {
					t.Fatalf("A's AfterConsume results %+v, want one with ErrLeaseLost", resultsA)
				}
				if c := e.p.Counters(); c.LeaseLost != 1 || c.Succeeded != 0 {
					t.Fatalf("A's counters %+v, want LeaseLost 1 and Succeeded 0", c)
				}
				if len(attemptsB) != 1 || attemptsB[0] != 1 {
					t.Fatalf("B's runs: attempts %v, want [1]", attemptsB)
				}
				var rows []Written
				if err := e.db.Find(&rows).Error; err != nil {
					t.Fatal(err)
				}
				if len(rows) != 1 || rows[0].By != "B" {
					t.Fatalf("written rows %+v, want exactly B's: A's Message.Tx write must roll back", rows)
				}
				if got := e.count(t, &am.PoisonedMessage{}); got != 0 || e.pending(t) != 0 {
					t.Fatalf("poisoned %d, pending %d; want 0, 0", got, e.pending(t))
				}
			})
		})
	}
}

// TestCrashedClaimIsDueAgainAtLeaseEnd: instance A claims a message and dies (its
// connection pool closed, its context cancelled) without completing it. The message is
// due again for instance B exactly when B's clock passes A's lease end: not 1 ms before,
// and 1 ms after, with no attempt counted.
func TestCrashedClaimIsDueAgainAtLeaseEnd(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, quiet(am.Config{})) // instance B, on e.clock
		var mu sync.Mutex
		var attemptsB []int
		if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
			mu.Lock()
			attemptsB = append(attemptsB, m.Attempt)
			mu.Unlock()
			return nil
		}), am.WithName("Crashy")); err != nil {
			t.Fatal(err)
		}
		clockA := newClock() // same start as e.clock
		a := instance(t, e.db, dialect, quiet(leaseConfig(am.Config{Clock: clockA})))
		started := make(chan struct{}, 1)
		release := make(chan struct{})
		defer close(release)
		if err := am.Register[Job](a, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
			started <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		}), am.WithName("Crashy"), am.WithTimeout(leaseTimeout)); err != nil {
			t.Fatal(err)
		}
		if err := am.ProduceNow(context.Background(), e.db, Job{N: 1}); err != nil {
			t.Fatal(err)
		}
		ctxA, crash := context.WithCancel(context.Background())
		defer crash()
		doneA := make(chan error, 1)
		go func() {
			_, err := a.ProcessBatch(ctxA)
			doneA <- err
		}()
		select {
		case <-started:
		case err := <-doneA:
			t.Fatalf("A's batch ended (%v) before its consumer ran", err)
		case <-time.After(30 * time.Second): // generous: a loaded CI machine
			t.Fatal("A's consumer did not start")
		}
		// The crash: A can write nothing more, and its work is cancelled.
		dbA, err := a.DB()
		if err != nil {
			t.Fatal(err)
		}
		sqlA, err := dbA.DB()
		if err != nil {
			t.Fatal(err)
		}
		if err := sqlA.Close(); err != nil {
			t.Fatal(err)
		}
		crash()
		select {
		case err := <-doneA:
			t.Logf("A's ProcessBatch after the crash: %v", err)
		case <-time.After(30 * time.Second): // generous: a loaded CI machine
			t.Fatal("A's ProcessBatch did not return after its context was cancelled")
		}

		var row am.ConsumerMessage
		if err := e.db.First(&row).Error; err != nil {
			t.Fatalf("the claimed message is gone: %v", err)
		}
		if row.Attempts != 0 {
			t.Fatalf("the crashed claim counted %d attempts", row.Attempts)
		}
		e.clock.Advance(leaseLength - time.Millisecond)
		if n, err := e.p.ProcessBatch(context.Background()); err != nil || n != 0 {
			t.Fatalf("1 ms before A's lease end, B's ProcessBatch = %d, %v; want 0, nil", n, err)
		}
		e.clock.Advance(2 * time.Millisecond)
		if n, err := e.p.ProcessBatch(context.Background()); err != nil || n != 1 {
			t.Fatalf("1 ms after A's lease end, B's ProcessBatch = %d, %v; want 1, nil", n, err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(attemptsB) != 1 || attemptsB[0] != 1 {
			t.Fatalf("B's runs: attempts %v, want [1] (the crash counts no attempt)", attemptsB)
		}
		if got := e.count(t, &am.PoisonedMessage{}); got != 0 || e.pending(t) != 0 {
			t.Fatalf("poisoned %d, pending %d; want 0, 0", got, e.pending(t))
		}
	})
}

// TestLeasesArePerConsumer: a claim leases each message for its own consumer's longest
// run, not for the longest of all: beside a consumer with a one-hour timeout, a crashed
// claim of a default-timeout consumer's message is due again after the base lease. Runs
// of each lease complete (their fenced completion matches the lease their claim set).
func TestLeasesArePerConsumer(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, quiet(leaseConfig(am.Config{})))
		const grace, margin = time.Second, 10 * time.Second
		want := map[string]time.Duration{ // consumer → lease
			"Email":  5*time.Second + grace + margin, // ConsumerTimeout
			"Report": time.Hour + grace + margin,
			"Export": time.Hour + grace + margin,   // shares Report's lease
			"Ping":   time.Second + grace + margin, // shorter than the default
		}
		timeouts := map[string]time.Duration{"Report": time.Hour, "Export": time.Hour, "Ping": time.Second}
		var wg sync.WaitGroup
		wg.Add(len(want))
		release := make(chan struct{})
		for name := range want {
			opts := []am.ConsumerOption{am.WithName(name)}
			if d, ok := timeouts[name]; ok {
				opts = append(opts, am.WithTimeout(d))
			}
			if err := am.Register[Job](e.p, am.ConsumerFunc[Job](func(ctx context.Context, m *am.Message[Job]) error {
				wg.Done()
				<-release
				return nil
			}), opts...); err != nil {
				t.Fatal(err)
			}
		}
		checkLeases(t, e, want, &wg, release)
		if n := e.pending(t); n != 0 {
			t.Fatalf("%d messages left after their runs succeeded: a completion did not match its lease", n)
		}
		if c := e.p.Counters(); c.Succeeded != uint64(len(want)) || c.LeaseLost != 0 {
			t.Fatalf("counters %+v", c)
		}
	})
}

// TestClaimLeavesSynchronousCommitAlone: on PostgreSQL a claim commits with
// synchronous_commit off (a server crash that forgets it makes its messages due again, as
// any crash does), set for its own transaction only: the connection's next transaction is
// durable as configured.
func TestClaimLeavesSynchronousCommitAlone(t *testing.T) {
	t.Parallel()
	e := setup(t, "postgres", quiet(am.Config{}), testdb.Options{MaxOpenConns: 1}) // one connection: the claim's
	if err := am.Register[Job](e.p, Flaky{&recorder[Job]{}}); err != nil {
		t.Fatal(err)
	}
	if err := am.ProduceNow(context.Background(), e.db, Job{N: 1}); err != nil {
		t.Fatal(err)
	}
	if n := mustBatch(t, e); n != 1 {
		t.Fatalf("claimed %d, want 1", n)
	}
	var setting string
	if err := e.db.Raw("SHOW synchronous_commit").Scan(&setting).Error; err != nil {
		t.Fatal(err)
	}
	if setting != "on" {
		t.Fatalf("synchronous_commit after a claim = %q on its connection, want the server's \"on\"", setting)
	}
}

// checkLeases produces a Job, runs a batch whose consumers each call wg.Done and wait for
// release, checks while they wait that each consumer's message is leased for want[its
// name], then lets them return and waits for the batch.
func checkLeases(t *testing.T, e *env, want map[string]time.Duration, wg *sync.WaitGroup, release chan struct{}) {
	t.Helper()
	if err := am.ProduceNow(context.Background(), e.db, Job{N: 1}); err != nil {
		t.Fatal(err)
	}
	claimedAt := e.clock.Now()
	done := make(chan error, 1)
	go func() {
		_, err := e.p.ProcessBatch(context.Background())
		done <- err
	}()
	wg.Wait() // every consumer runs: the claim has committed
	var rows []am.ConsumerMessage
	if err := e.db.Find(&rows).Error; err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d", len(rows), len(want))
	}
	for _, r := range rows {
		if got := time.UnixMilli(r.AvailableAfter).Sub(claimedAt); got != want[r.ConsumerType] {
			t.Errorf("%q: leased for %s, want %s", r.ConsumerType, got, want[r.ConsumerType])
		}
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
