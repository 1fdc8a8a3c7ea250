package natsrelay_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"github.com/asyncmonolith/asyncmonolith/natsrelay"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// The fault test runs each side in a child process (this test binary, re-executed), so
// that it can be SIGKILLed: NATSRELAY_CHILD says which side.
func TestMain(m *testing.M) {
	switch os.Getenv("NATSRELAY_CHILD") {
	case "":
		os.Exit(m.Run())
	case "relay", "inbox":
		if err := runChild(); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
}

func openDSN(dialect, dsn string) (*gorm.DB, error) {
	cfg := &gorm.Config{Logger: logger.Discard}
	switch dialect {
	case "postgres":
		return gorm.Open(postgres.Open(dsn), cfg)
	case "mysql":
		return gorm.Open(mysql.Open(dsn), cfg)
	default:
		return gorm.Open(sqlite.Open(dsn), cfg)
	}
}

// runChild is one side of the fault test, until it is killed: "relay" forwards A's
// outbox, "inbox" takes messages into B and applies them. It writes its relay's or
// inbox's stats to NATSRELAY_STATS every 20 ms.
func runChild() error {
	ctx := context.Background()
	db, err := openDSN(os.Getenv("NATSRELAY_DIALECT"), os.Getenv("NATSRELAY_DSN"))
	if err != nil {
		return err
	}
	nc, err := nats.Connect(os.Getenv("NATSRELAY_URL"), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		return err
	}
	p := am.New(am.Config{Logger: quietLogger(), ProcessorMaxDelay: 50 * time.Millisecond, AttemptDelay: 200 * time.Millisecond,
		BreakerCooldown: 200 * time.Millisecond, BreakerMaxCooldown: time.Second})
	if err := db.Use(p); err != nil {
		return err
	}
	var stats func() string
	if os.Getenv("NATSRELAY_CHILD") == "relay" {
		relay, err := natsrelay.NewRelay(nc, natsrelay.RelayConfig{SubjectPrefix: os.Getenv("NATSRELAY_PREFIX"), PublishTimeout: time.Second})
		if err != nil {
			return err
		}
		if err := natsrelay.Forward[OrderCancelled](p, relay); err != nil {
			return err
		}
		stats = func() string { s := relay.Stats(); return fmt.Sprintf("%d %d", s.Published, s.Duplicates) }
	} else {
		if err := am.Register[OrderCancelled](p, am.ConsumerFunc[OrderCancelled](func(ctx context.Context, m *am.Message[OrderCancelled]) error {
			return m.Tx.Create(&Applied{OrderID: m.Payload.OrderID}).Error
		}), am.WithName("ApplyCancellation")); err != nil {
			return err
		}
		var in *natsrelay.Inbox
		for {
			in, err = natsrelay.NewInbox(ctx, db, nc, natsrelay.InboxConfig{Stream: os.Getenv("NATSRELAY_STREAM"), Durable: "b",
				AckWait: 2 * time.Second, RetryDelay: 100 * time.Millisecond, FetchWait: 200 * time.Millisecond, Logger: quietLogger()})
			if err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond) // NATS is restarting
		}
		if err := natsrelay.Accept[OrderCancelled](in); err != nil {
			return err
		}
		if err := in.Start(ctx); err != nil {
			return err
		}
		stats = func() string { s := in.Stats(); return fmt.Sprintf("%d %d", s.Received, s.Duplicates) }
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	for {
		_ = os.WriteFile(os.Getenv("NATSRELAY_STATS"), []byte(stats()), 0o600)
		select {
		case <-sig:
			return nil
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// child is one side's process, restarted after each kill.
type child struct {
	t     *testing.T
	role  string
	env   []string
	dir   string
	cmd   *exec.Cmd
	n     int // incarnations so far
	kills int
}

func (c *child) start() {
	c.t.Helper()
	c.n++
	c.cmd = exec.Command(os.Args[0], "-test.run=^$")
	c.cmd.Env = append(os.Environ(), append(c.env, "NATSRELAY_CHILD="+c.role,
		"NATSRELAY_STATS="+filepath.Join(c.dir, c.role+"-"+strconv.Itoa(c.n)))...)
	out, err := os.Create(filepath.Join(c.dir, c.role+"-"+strconv.Itoa(c.n)+".log"))
	if err != nil {
		c.t.Fatal(err)
	}
	defer out.Close()
	c.cmd.Stdout, c.cmd.Stderr = out, out
	if err := c.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
}

func (c *child) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	_ = c.cmd.Wait()
	c.kills++
}

// output is what the incarnations printed.
func (c *child) output() string {
	var b strings.Builder
	for i := 1; i <= c.n; i++ {
		out, _ := os.ReadFile(filepath.Join(c.dir, c.role+"-"+strconv.Itoa(i)+".log"))
		fmt.Fprintf(&b, "--- %s #%d:\n%s", c.role, i, out)
	}
	return b.String()
}

// stats sums the last stats every incarnation wrote: (published or received, duplicates).
func (c *child) stats() (total, dups int64) {
	for i := 1; i <= c.n; i++ {
		b, _ := os.ReadFile(filepath.Join(c.dir, c.role+"-"+strconv.Itoa(i)))
		f := strings.Fields(string(b))
		if len(f) == 2 {
			a, _ := strconv.ParseInt(f[0], 10, 64)
			d, _ := strconv.ParseInt(f[1], 10, 64)
			total, dups = total+a, dups+d
		}
	}
	return total, dups
}

// The relay process SIGKILLed at random moments (6 times), the inbox process too (3
// times), and the NATS server killed and restarted mid-stream: nothing is lost and
// nothing is applied twice in B.
func TestFaultsKillAndRestart(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, seed))
	t.Logf("seed %d", seed)
	srv := startServer(t)
	nc := connectTo(t, srv.url())
	st, prefix := newStream(t, nc, jetstream.StreamConfig{})
	dsnA, dbA := testdb.OpenDSN(t, "postgres")
	dsnB, dbB := testdb.OpenDSN(t, "sqlite")
	a := newService(t, dbA, am.Config{})
	if err := natsrelay.Forward[OrderCancelled](a.p, mustRelay(t, nc)); err != nil { // registered so A can produce
		t.Fatal(err)
	}
	b := newService(t, dbB, am.Config{})
	if err := b.db.AutoMigrate(&Applied{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	common := []string{"NATSRELAY_URL=" + srv.url(), "NATSRELAY_PREFIX=" + prefix, "NATSRELAY_STREAM=" + streamName(t, st)}
	relay := &child{t: t, role: "relay", dir: dir, env: append([]string{"NATSRELAY_DIALECT=postgres", "NATSRELAY_DSN=" + dsnA}, common...)}
	inbox := &child{t: t, role: "inbox", dir: dir, env: append([]string{"NATSRELAY_DIALECT=sqlite", "NATSRELAY_DSN=" + dsnB}, common...)}
	relay.start()
	inbox.start()
	t.Cleanup(func() { relay.kill(); inbox.kill() })
	defer func() {
		if t.Failed() {
			t.Logf("%s\n%s", relay.output(), inbox.output())
		}
	}()

	const n = 5000
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := 0; i < n; i += 50 {
			batch := make([]OrderCancelled, 50)
			for j := range batch {
				batch[j] = OrderCancelled{OrderID: i + j}
			}
			if err := a.db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, batch).Error }); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(time.Duration(i%4) * time.Millisecond)
		}
	}()
	pause := func() { time.Sleep(time.Duration(100+rng.IntN(500)) * time.Millisecond) }
	for i := 0; i < 6; i++ {
		pause()
		relay.kill()
		relay.start()
		if i%2 == 1 {
			pause()
			inbox.kill()
			inbox.start()
		}
		if i == 3 {
			pause()
			srv.stop()
			time.Sleep(500 * time.Millisecond)
			srv.start()
		}
	}
	<-produced
	waitFor(t, 3*time.Minute, func() bool { rows, _ := applied(t, b); return rows >= n }, "all %d orders applied in B", n)
	waitFor(t, 30*time.Second, func() bool {
		return a.count(t, &am.ConsumerMessage{}) == 0 && b.count(t, &am.ConsumerMessage{}) == 0
	}, "both queues empty")
	time.Sleep(300 * time.Millisecond) // anything left in flight would land now
	if rows, distinct := applied(t, b); rows != n || distinct != n {
		t.Fatalf("B applied %d rows for %d orders, want %d, each once", rows, distinct, n)
	}
	if p := a.count(t, &am.PoisonedMessage{}) + b.count(t, &am.PoisonedMessage{}); p != 0 {
		t.Fatalf("%d poisoned", p)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n {
		t.Fatalf("stream holds %d messages, want %d (a republish was stored twice, or one was lost)", info.State.Msgs, n)
	}
	published, jsDups := relay.stats()
	received, inboxDups := inbox.stats()
	fmt.Printf("faults (seed %d): relay killed %d times, inbox %d times, NATS restarted once; %d orders applied once each; "+
		"publishes acked %d (at least: a killed process's last counts may be missing), duplicates JetStream dropped %d; inbox received %d, duplicates it dropped %d\n",
		seed, relay.kills, inbox.kills, n, published, jsDups, received, inboxDups)
}

func mustRelay(t testing.TB, nc *nats.Conn) *natsrelay.Relay {
	t.Helper()
	r, err := natsrelay.NewRelay(nc, natsrelay.RelayConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}
