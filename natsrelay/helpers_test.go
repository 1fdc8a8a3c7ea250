package natsrelay_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gorm.io/gorm"
)

// OrderCancelled is the payload the tests relay.
type OrderCancelled struct {
	OrderID int    `json:"order_id"`
	Reason  string `json:"reason"`
}

// Applied is the receiver's domain table: one row per application of an order, so an
// order applied twice shows as two rows.
type Applied struct {
	ID      int64 `gorm:"primaryKey"`
	OrderID int   `gorm:"index"`
}

func natsURL() string {
	if v := os.Getenv("AM_NATS_URL"); v != "" {
		return v
	}
	return nats.DefaultURL
}

// unreachable fails the test under CI=true and skips it loudly otherwise.
func unreachable(t testing.TB, what string, err error) {
	t.Helper()
	msg := fmt.Sprintf("!!! %s is NOT reachable (%v): the NATS tests do not run. Start nats-server -js (see docs/natsrelay.md) or set AM_NATS_URL.", what, err)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// connect connects to the shared NATS server.
func connect(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(natsURL(), nats.Timeout(2*time.Second))
	if err != nil {
		unreachable(t, "NATS "+natsURL(), err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		unreachable(t, "JetStream at "+natsURL(), err)
	}
	return nc
}

// server is a private nats-server with its own store, for tests that stop it.
type server struct {
	t    testing.TB
	port int
	dir  string
	cmd  *exec.Cmd
	args []string
}

func (s *server) url() string { return "nats://127.0.0.1:" + strconv.Itoa(s.port) }

// startServer starts a private JetStream server on a free port; conf, when given, is
// its configuration file's text (nats-server 2.9 has no flag for max_payload).
func startServer(t testing.TB, conf ...string) *server {
	t.Helper()
	bin := "/usr/sbin/nats-server"
	if p, err := exec.LookPath("nats-server"); err == nil {
		bin = p
	}
	if _, err := os.Stat(bin); err != nil {
		unreachable(t, "nats-server binary", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &server{t: t, port: port, dir: t.TempDir()}
	s.args = []string{bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", s.dir}
	if len(conf) > 0 {
		path := filepath.Join(t.TempDir(), "nats.conf")
		if err := os.WriteFile(path, []byte(strings.Join(conf, "\n")), 0o600); err != nil {
			t.Fatal(err)
		}
		s.args = append(s.args, "-c", path)
	}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *server) start() {
	s.t.Helper()
	s.cmd = exec.Command(s.args[0], s.args[1:]...)
	s.cmd.Stdout, s.cmd.Stderr = io.Discard, io.Discard
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("nats-server: %v", err)
	}
	testdb.Eventually(s.t, 10*time.Second, func() bool {
		nc, err := nats.Connect(s.url())
		if err != nil {
			return false
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err = js.AccountInfo(ctx)
		return err == nil
	}, "private nats-server on port %d with JetStream", s.port)
}

// stop kills the server (SIGKILL: no clean shutdown) and waits for it.
func (s *server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// connectTo connects to url, reconnecting for ever.
func connectTo(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func randomName() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newStream creates a stream of its own for one test, capturing prefix.>, deleted when it ends.
func newStream(t testing.TB, nc *nats.Conn, cfg jetstream.StreamConfig) (jetstream.Stream, string) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	name := "T" + randomName()
	prefix := "t" + name
	cfg.Name, cfg.Subjects = name, []string{prefix + ".>"}
	if cfg.Storage == 0 {
		cfg.Storage = jetstream.FileStorage
	}
	ctx := context.Background()
	st, err := js.CreateStream(ctx, cfg)
	if err != nil {
		t.Fatalf("create stream: %v", err)
	}
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), name) })
	return st, prefix
}

// service is one side's database with the plugin.
type service struct {
	db *gorm.DB
	p  *am.Plugin
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newService(t testing.TB, db *gorm.DB, cfg am.Config) *service {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	if cfg.ProcessorMaxDelay == 0 {
		cfg.ProcessorMaxDelay = 50 * time.Millisecond
	}
	p := am.New(cfg)
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	if err := p.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return &service{db: db, p: p}
}

func (s *service) start(t testing.TB) {
	t.Helper()
	if err := s.p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.p.Stop(ctx)
	})
}

func (s *service) count(t testing.TB, model any) int64 {
	t.Helper()
	var n int64
	if err := s.db.Model(model).Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

// produce writes orders [from, to) as OrderCancelled, per transactions of perTx.
func (s *service) produce(t testing.TB, from, to, perTx int) {
	t.Helper()
	for i := from; i < to; i += perTx {
		batch := make([]OrderCancelled, 0, perTx)
		for j := i; j < min(i+perTx, to); j++ {
			batch = append(batch, OrderCancelled{OrderID: j, Reason: "customer"})
		}
		if err := s.db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, batch).Error }); err != nil {
			t.Fatal(err)
		}
	}
}

// applyConsumer registers, on the receiver, a consumer that inserts one Applied row per
// run in Message.Tx (committed with the message's completion).
func applyConsumer(t testing.TB, s *service) {
	t.Helper()
	if err := s.db.AutoMigrate(&Applied{}); err != nil {
		t.Fatal(err)
	}
	if err := am.Register[OrderCancelled](s.p, am.ConsumerFunc[OrderCancelled](func(ctx context.Context, m *am.Message[OrderCancelled]) error {
		return m.Tx.Create(&Applied{OrderID: m.Payload.OrderID}).Error
	}), am.WithName("ApplyCancellation")); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	testdb.Eventually(t, timeout, cond, format, args...)
}

// applied returns how many Applied rows there are and how many distinct orders they hold.
func applied(t testing.TB, s *service) (rows, distinct int64) {
	t.Helper()
	if err := s.db.Model(&Applied{}).Count(&rows).Error; err != nil {
		t.Fatal(err)
	}
	if err := s.db.Model(&Applied{}).Distinct("order_id").Count(&distinct).Error; err != nil {
		t.Fatal(err)
	}
	return rows, distinct
}

// produceReasons writes one OrderCancelled per reason (order i has reasons[i]) in one transaction.
func (s *service) produceReasons(t testing.TB, reasons ...string) {
	t.Helper()
	if err := s.db.Transaction(func(tx *gorm.DB) error {
		for i, r := range reasons {
			if err := am.ProduceTx(tx, OrderCancelled{OrderID: i, Reason: r}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// recreateStream deletes the stream of cfg and creates it again, empty.
func recreateStream(t testing.TB, js jetstream.JetStream, cfg jetstream.StreamConfig) {
	t.Helper()
	ctx := context.Background()
	if err := js.DeleteStream(ctx, cfg.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
}
