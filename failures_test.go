package asyncmonolith_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"gorm.io/gorm"
)

// Healthy is the payload of the messages that sit beside a failing one.
type Healthy struct {
	N int `json:"n"`
}

// Bad is the payload of a message whose consumer fails.
type Bad struct {
	Blob string `json:"blob,omitempty"`
}

// Counter is a row the application and a consumer both update.
type Counter struct {
	ID uint `gorm:"primaryKey;autoIncrement:false"`
	N  int
}

// storedErrorMax is the documented bound of stored error text.
const storedErrorMax = 4000

// failureCase is one way a single message can fail badly (issue 12, point 4).
type failureCase struct {
	name     string
	dialects []string      // nil: all three
	timeout  time.Duration // the failing consumer's WithTimeout (0: none)
	bad      int           // how many failing messages (0: 1)
	setup    func(t *testing.T, e *env)
	payload  func(t *testing.T, e *env, i int) Bad
	consume  func(ctx context.Context, m *am.Message[Bad]) error
	// round, when set, runs one processing round (process) with its own choreography.
	round  func(t *testing.T, e *env, process func())
	reason func(t *testing.T, where, lastError string)
}

// TestAFailureCostsOnlyItsOwnMessage: each way a consumer can fail that used to fail its
// whole batch (the batch rolled back without counting an attempt, and the healthy messages
// beside it ran again every round) ends as a counted attempt for the failing message alone:
// retried, then poisoned with its reason, while the 20 healthy messages beside it complete
// exactly once.
func TestAFailureCostsOnlyItsOwnMessage(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		for _, c := range failureCases(dialect) {
			if c.dialects != nil && !contains(c.dialects, dialect) {
				continue
			}
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				runFailureCase(t, dialect, c)
			})
		}
	})
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func failureCases(dialect string) []failureCase {
	fails := func(msg string) func(context.Context, *am.Message[Bad]) error {
		return func(context.Context, *am.Message[Bad]) error { return errors.New(msg) }
	}
	keeps := func(parts ...string) func(t *testing.T, where, s string) {
		return func(t *testing.T, where, s string) {
			t.Helper()
			for _, p := range parts {
				if !strings.Contains(s, p) {
					t.Errorf("%s: stored error %q lost %q", where, s, p)
				}
			}
		}
	}
	longText := "readable start " + strings.Repeat("€", 2000) // 6,015 bytes; byte 4,000 is inside a "€"
	cases := []failureCase{
		{name: "ErrorWithNUL", consume: fails("before\x00after: readable"), reason: keeps("before", "after: readable")},
		{name: "ErrorWithInvalidUTF8", consume: fails("bad \xff\xfe bytes: readable tail"), reason: keeps("bad ", " bytes: readable tail")},
		{name: "ErrorTooLongCutInsideARune", consume: fails(longText), reason: func(t *testing.T, where, s string) {
			t.Helper()
			if !strings.Contains(s, "readable start €€€") || len(s) < storedErrorMax-10 {
				t.Errorf("%s: stored error (%d bytes) does not keep the readable part: %.40q…", where, len(s), s)
			}
		}},
		lockCase(dialect),
	}
	// A statement that outlives its consumer's 200 ms timeout; both servers' drivers close
	// the connection when the context ends. SQLite has no sleep: a long recursive query,
	// read row by row, which database/sql ends when the context ends (a single long step
	// would leave it to sqlite3_interrupt, which the driver calls racily: a no-op if the
	// step has not begun).
	//
	// The timeout runs on the test clock: the test advances it once the statement runs,
	// seen on the server (the consumer names its connection by its backend id), or, on
	// SQLite, once the consumer has read its first row.
	long := map[string]string{
		"postgres": "SELECT pg_sleep(1)",
		"mysql":    "SELECT SLEEP(1)",
		"sqlite":   "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 1000000000) SELECT i FROM r",
	}[dialect]
	running := make(chan int64, 1)
	cases = append(cases, failureCase{
		name:    "StatementOutlivesTimeout",
		timeout: 200 * time.Millisecond,
		consume: func(ctx context.Context, m *am.Message[Bad]) error {
			if dialect == "sqlite" {
				rows, err := m.Tx.Raw(long).Rows()
				if err != nil {
					return err
				}
				defer rows.Close()
				for first := true; rows.Next(); first = false {
					if first {
						running <- 0
					}
				}
				if err := rows.Err(); err != nil {
					return err
				}
				return ctx.Err()
			}
			var id int64
			if err := m.Tx.Raw(backendIDQuery(dialect)).Scan(&id).Error; err != nil {
				return err
			}
			running <- id
			var v int64
			if err := m.Tx.Raw(long).Scan(&v).Error; err != nil {
				return err
			}
			return ctx.Err() // SLEEP may return early, without an error, when killed
		},
		round: func(t *testing.T, e *env, process func()) {
			done := make(chan struct{})
			go func() { defer close(done); process() }()
			id := recv(t, running, "the failing consumer runs its statement")
			if dialect != "sqlite" {
				obs := testdb.Open(t, dialect)
				eventually(t, func() bool { return serverRuns(t, obs, dialect, id, "statement") }, "the server runs the long statement")
			}
			e.clock.Advance(200 * time.Millisecond)
			recv(t, done, "the round ends once the statement's consumer timed out")
		},
		reason: keeps("timed out"),
	})
	if dialect == "mysql" {
		cases = append(cases, packetCases()...)
	}
	return cases
}

// backendIDQuery returns the id of the server connection it runs on.
func backendIDQuery(dialect string) string {
	if dialect == "postgres" {
		return "SELECT pg_backend_pid()"
	}
	return "SELECT CONNECTION_ID()"
}

// serverRuns reports whether server connection id is in the given state: running the
// failure cases' long statement ("statement"), or waiting for a row lock ("lock wait").
// It asks through obs, a pool of its own: the test's pool may be held by the batch's
// Message.Tx transactions until the failing run ends.
func serverRuns(t *testing.T, obs *gorm.DB, dialect string, id int64, state string) bool {
	t.Helper()
	q := map[string]string{
		"postgres statement": "SELECT count(*) FROM pg_stat_activity WHERE pid = ? AND state = 'active' AND query LIKE 'SELECT pg_sleep%'",
		"postgres lock wait": "SELECT count(*) FROM pg_stat_activity WHERE pid = ? AND wait_event_type = 'Lock'",
		"mysql statement":    "SELECT count(*) FROM information_schema.processlist WHERE id = ? AND info LIKE 'SELECT SLEEP%'",
		// MariaDB: the UPDATE on the server while the application holds its row is waiting
		// for it (information_schema.innodb_trx is a cache, seen minutes stale).
		"mysql lock wait": "SELECT count(*) FROM information_schema.processlist WHERE id = ? AND command = 'Query' AND info LIKE 'UPDATE counters SET n = n + 1%'",
	}[dialect+" "+state]
	var n int64
	if err := obs.Raw(q, id).Scan(&n).Error; err != nil {
		t.Fatalf("%s: %v", state, err)
	}
	return n > 0
}

func runFailureCase(t *testing.T, dialect string, c failureCase) {
	// ConsumerTimeout is generous: only the cases that time out on purpose set one, and
	// the multi-MB payloads take seconds to decode under the race detector. The pool is
	// capped because every Message.Tx holds a connection and the servers are shared.
	//
	// On SQLite, where the application's write lock stalls every writer, the 20 healthy
	// consumers would otherwise hold all of MaxMessageTxs while they wait, and the failing
	// one would time out waiting for a slot (the plugin's backpressure: released without an
	// attempt) instead of in its own statement; a file database has no connection limit.
	cfg, pool := am.Config{AttemptDelay: time.Minute, AbandonGrace: 200 * time.Millisecond,
		ConsumerTimeout: time.Minute}, 10
	if dialect == "sqlite" {
		cfg.MaxMessageTxs, pool = 32, 40
	}
	e := setup(t, dialect, quiet(cfg), testdb.Options{MaxOpenConns: pool})
	if err := e.db.AutoMigrate(&Written{}); err != nil {
		t.Fatal(err)
	}
	if c.setup != nil {
		c.setup(t, e)
	}
	var mu sync.Mutex
	healthyRuns := map[int]int{}
	badRuns := 0
	if err := am.Register[Healthy](e.p, am.ConsumerFunc[Healthy](func(ctx context.Context, m *am.Message[Healthy]) error {
		mu.Lock()
		healthyRuns[m.Payload.N]++
		mu.Unlock()
		return m.Tx.Create(&Written{N: m.Payload.N, By: "healthy"}).Error
	}), am.WithName("Healthy")); err != nil {
		t.Fatal(err)
	}
	opts := []am.ConsumerOption{am.WithName("Failing"), am.WithAttempts(2)}
	if c.timeout > 0 {
		opts = append(opts, am.WithTimeout(c.timeout))
	}
	if err := am.Register[Bad](e.p, am.ConsumerFunc[Bad](func(ctx context.Context, m *am.Message[Bad]) error {
		mu.Lock()
		badRuns++
		mu.Unlock()
		return c.consume(ctx, m)
	}), opts...); err != nil {
		t.Fatal(err)
	}

	const healthy = 20
	jobs := make([]Healthy, healthy)
	for i := range jobs {
		jobs[i].N = i
	}
	if err := e.db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, jobs).Error }); err != nil {
		t.Fatal(err)
	}
	bad := max(c.bad, 1)
	payloadLen := map[string]int{} // by message id
	for i := range bad {
		var b Bad
		if c.payload != nil {
			b = c.payload(t, e, i)
		}
		if err := am.ProduceNow(context.Background(), e.db, b); err != nil {
			t.Fatalf("produce failing message %d (payload %d bytes): %v", i, len(b.Blob), err)
		}
	}
	var badRows []am.ConsumerMessage
	if err := e.db.Select("id", "payload").Where("consumer_type = ?", "Failing").Find(&badRows).Error; err != nil || len(badRows) != bad {
		t.Fatalf("%d failing messages stored (%v), want %d", len(badRows), err, bad)
	}
	for _, r := range badRows {
		payloadLen[r.ID] = len(r.Payload)
	}

	for round := 1; round <= 2; round++ {
		var n int
		var err error
		process := func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			n, err = e.p.ProcessBatch(ctx)
		}
		if c.round != nil {
			c.round(t, e, process)
		} else {
			process()
		}
		want := bad
		if round == 1 {
			want += healthy
		}
		if err != nil || n != want {
			t.Fatalf("round %d: ProcessBatch = %d, %v; want %d, nil: one message's failure must not fail its batch", round, n, err, want)
		}

		mu.Lock()
		for i := range healthy {
			if healthyRuns[i] != 1 {
				t.Errorf("round %d: healthy message %d ran %d times, want 1", round, i, healthyRuns[i])
			}
		}
		if badRuns != round*bad {
			t.Errorf("round %d: the failing consumer ran %d times, want %d", round, badRuns, round*bad)
		}
		mu.Unlock()
		if got := e.count(t, &Written{}); got != healthy {
			t.Errorf("round %d: %d rows written through Message.Tx, want %d (each healthy message once)", round, got, healthy)
		}
		if got := e.count(t, &am.ConsumerMessage{}, "consumer_type = ?", "Healthy"); got != 0 {
			t.Errorf("round %d: %d healthy messages still pending", round, got)
		}
		if round == 1 {
			var rows []am.ConsumerMessage
			if err := e.db.Where("consumer_type = ?", "Failing").Find(&rows).Error; err != nil {
				t.Fatal(err)
			}
			if len(rows) != bad {
				t.Fatalf("after the first attempt %d failing messages are pending, want %d (retried)", len(rows), bad)
			}
			for _, r := range rows {
				if r.Attempts != 1 || r.LastError == nil {
					t.Fatalf("after the first attempt: attempts %d, last_error %v; want a counted attempt with its reason", r.Attempts, r.LastError != nil)
				}
				where := "last_error after attempt 1"
				checkStoredError(t, where, *r.LastError)
				c.reason(t, where, *r.LastError)
			}
			e.clock.Advance(time.Minute)
		}
	}
	var poisoned []am.PoisonedMessage
	if err := e.db.Find(&poisoned).Error; err != nil {
		t.Fatal(err)
	}
	if len(poisoned) != bad {
		t.Fatalf("%d poisoned messages, want %d", len(poisoned), bad)
	}
	for _, p := range poisoned {
		if p.ConsumerType != "Failing" || p.Attempts != 2 {
			t.Fatalf("poisoned %s: consumer %s, attempts %d; want Failing, 2", p.ID, p.ConsumerType, p.Attempts)
		}
		if want, ok := payloadLen[p.ID]; !ok || len(p.Payload) != want {
			t.Fatalf("poisoned %s: payload of %d bytes, want %d (the produced payload)", p.ID, len(p.Payload), want)
		}
		checkStoredError(t, "poisoned last_error", p.LastError)
		c.reason(t, "poisoned last_error", p.LastError)
	}
	if got := e.pending(t); got != 0 {
		t.Fatalf("%d messages pending after the last attempt", got)
	}
}

// checkStoredError checks the documented form of stored error text.
func checkStoredError(t *testing.T, where, s string) {
	t.Helper()
	switch {
	case !utf8.ValidString(s):
		t.Errorf("%s is not valid UTF-8: %.60q", where, s)
	case strings.ContainsRune(s, 0):
		t.Errorf("%s holds a NUL byte: %.60q", where, s)
	case len(s) > storedErrorMax:
		t.Errorf("%s is %d bytes, over %d", where, len(s), storedErrorMax)
	}
}
