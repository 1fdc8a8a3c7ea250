// Command example is a small orders service built on asyncmonolith. By default it runs a
// scripted demo against its own HTTP API, narrating what the library does, and exits; with
// -serve it keeps the API running until Ctrl-C.
//
//	go run ./example                       # SQLite in a temporary directory, no set-up
//	go run ./example -db postgres          # the local PostgreSQL (database test)
//	go run ./example -db mysql -dsn 'root:@tcp(127.0.0.1:3306)/test?parseTime=true&interpolateParams=true'
//	go run ./example -serve                # keep the API up on 127.0.0.1:8080; the dashboard is at /asyncmonolith/
//
// The dashboard has no authentication here (an application puts its admin auth in front
// of it): keep -addr on a loopback address.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

type options struct {
	dialect string
	dsn     string
	serve   bool
	addr    string
	db      *gorm.DB // set by tests instead of dialect/dsn
}

func main() {
	var o options
	flag.StringVar(&o.dialect, "db", "sqlite", "database: sqlite, postgres or mysql")
	flag.StringVar(&o.dsn, "dsn", "", "data source name (default: a temporary SQLite file, or the local server)")
	flag.BoolVar(&o.serve, "serve", false, "keep the HTTP API running until interrupted instead of running the demo")
	flag.StringVar(&o.addr, "addr", "127.0.0.1:8080", "listen address with -serve")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "example:", err)
		os.Exit(1)
	}
}

// open connects to the chosen database with the settings the library recommends.
func open(o options) (*gorm.DB, func(), error) {
	cfg := &gorm.Config{Logger: logger.Discard}
	switch o.dialect {
	case "sqlite":
		dsn, cleanup := o.dsn, func() {}
		if dsn == "" {
			dir, err := os.MkdirTemp("", "asyncmonolith-example-")
			if err != nil {
				return nil, nil, err
			}
			cleanup = func() { os.RemoveAll(dir) }
			// WAL, a busy timeout and immediate transactions: what SQLite needs under concurrency.
			dsn = "file:" + filepath.Join(dir, "example.db") + "?_journal_mode=WAL&_busy_timeout=5000&_txlock=immediate"
		}
		db, err := gorm.Open(sqlite.Open(dsn), cfg)
		return db, cleanup, err
	case "postgres":
		dsn := o.dsn
		if dsn == "" {
			dsn = "host=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable"
		}
		db, err := gorm.Open(postgres.Open(dsn), cfg)
		return db, func() {}, err
	case "mysql":
		dsn := o.dsn
		if dsn == "" {
			dsn = "root:@tcp(127.0.0.1:3306)/test?parseTime=true&interpolateParams=true"
		}
		db, err := gorm.Open(mysql.Open(dsn), cfg)
		return db, func() {}, err
	}
	return nil, nil, fmt.Errorf("unknown -db %q (want sqlite, postgres or mysql)", o.dialect)
}

// summary is what the demo left in the tables.
type summary struct {
	Orders, Cancelled, Refunds int64
	EmailsSent                 int64
	ProductViews               int64 // as aggregated into product_stats
	Pending, Poisoned          int64
	PoisonedErrors             []string
	ReportsPrinted             int64
	Schedules                  int64
}

func run(ctx context.Context, o options, out io.Writer) (summary, error) {
	db := o.db
	if db == nil {
		var cleanup func()
		var err error
		db, cleanup, err = open(o)
		if err != nil {
			return summary{}, err
		}
		defer cleanup()
		if sqlDB, err := db.DB(); err == nil {
			defer sqlDB.Close()
		}
	}
	start := time.Now()
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, "[%5.2fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	a := &app{db: db, say: say, failItem: "cursed amulet"}

	p := am.New(am.Config{
		AttemptDelay:      time.Second, // short, so the retry shows in the demo
		ProcessorMaxDelay: 250 * time.Millisecond,
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
		Hooks: am.Hooks{AfterConsume: func(ctx context.Context, m am.MessageInfo, r am.Result) {
			switch {
			case r.Poisoned:
				say("☠️  %s gave up on message %s after %d attempts: moved to poisoned_messages (%v)", m.ConsumerType, m.ID, m.Attempt, r.Err)
			case r.Err != nil:
				say("🔁 %s failed attempt %d; retry due at +%.1fs", m.ConsumerType, m.Attempt, r.RetryAt.Sub(start).Seconds())
			}
		}},
	})
	if err := db.Use(p); err != nil {
		return summary{}, err
	}
	if err := a.register(p); err != nil {
		return summary{}, err
	}
	if err := reset(ctx, db, p); err != nil {
		return summary{}, err
	}
	say("🚀 %s ready: tables migrated, consumers registered", db.Dialector.Name())
	if _, err := am.Schedule(ctx, db, SalesReport{Title: "Sales report"}, "*/3 * * * * *", am.Tag("reports")); err != nil {
		return summary{}, err
	}
	say("🗓️  scheduled a sales report every 3 seconds (cron \"*/3 * * * * *\")")
	if err := p.Start(ctx); err != nil {
		return summary{}, err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.Stop(stopCtx)
	}()

	ln, err := net.Listen("tcp", map[bool]string{true: o.addr, false: "127.0.0.1:0"}[o.serve])
	if err != nil {
		return summary{}, err
	}
	srv := &http.Server{Handler: a.routes(p), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() {
		shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutCtx)
	}()
	base := "http://" + ln.Addr().String()

	if o.serve {
		say("🌐 serving on %s: POST /orders, POST /orders/{id}/cancel, GET /products/{id}, GET /stats (Ctrl-C stops gracefully)", base)
		say("📋 dashboard: open %s/asyncmonolith/ in a browser", base)
		<-ctx.Done()
		say("🛑 stopping: no new batches; waiting for running consumers")
		return summary{}, nil
	}
	if err := demo(ctx, a, p, base, say); err != nil {
		return summary{}, err
	}
	s, err := summarize(ctx, db, a)
	if err != nil {
		return s, err
	}
	printSummary(out, s)
	return s, nil
}

// reset gives the demo a clean slate: on a shared database its tables are dropped first.
func reset(ctx context.Context, db *gorm.DB, p *am.Plugin) error {
	m := db.WithContext(ctx).Migrator()
	for _, t := range append(demoTables, &am.ConsumerMessage{}, &am.PoisonedMessage{}, &am.ScheduledMessage{}) {
		if err := m.DropTable(t); err != nil {
			return err
		}
	}
	if err := p.Migrate(ctx, db); err != nil {
		return err
	}
	return db.WithContext(ctx).AutoMigrate(demoTables...)
}

func demo(ctx context.Context, a *app, p *am.Plugin, base string, say func(string, ...any)) error {
	c := &client{base: base}
	var ids []uint
	for _, item := range []struct {
		name  string
		cents int64
	}{{"teapot", 2500}, {"cursed amulet", 6600}, {"kettle", 4200}} {
		o, err := c.placeOrder(ctx, item.name, item.cents)
		if err != nil {
			return err
		}
		ids = append(ids, o.ID)
		say("🛒 POST /orders → order %d (%s)", o.ID, item.name)
	}
	for _, id := range ids[:2] {
		if err := c.post(ctx, fmt.Sprintf("/orders/%d/cancel", id)); err != nil {
			return err
		}
		say("❌ POST /orders/%d/cancel → status and OrderCancelled committed in one transaction (2 consumers → 2 messages)", id)
	}
	for range 5 {
		if err := c.get(ctx, "/products/teapot"); err != nil {
			return err
		}
	}
	say("👀 GET /products/teapot ×5 → 5 page views, but one pending aggregation (insert id \"views:teapot\", due in 1.5s)")

	// Wait until everything settled: queue empty, one poisoned message, a report printed.
	deadline := time.Now().Add(25 * time.Second)
	for {
		var pending, poisoned int64
		a.db.WithContext(ctx).Model(&am.ConsumerMessage{}).Count(&pending)
		a.db.WithContext(ctx).Model(&am.PoisonedMessage{}).Count(&poisoned)
		if pending == 0 && poisoned == 1 && a.reports.Load() > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo did not settle: %d pending, %d poisoned, %d reports", pending, poisoned, a.reports.Load())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func summarize(ctx context.Context, db *gorm.DB, a *app) (summary, error) {
	s := summary{EmailsSent: a.emails.Load(), ReportsPrinted: a.reports.Load()}
	db = db.WithContext(ctx)
	errs := []error{
		db.Model(&Order{}).Count(&s.Orders).Error,
		db.Model(&Order{}).Where("status = ?", "cancelled").Count(&s.Cancelled).Error,
		db.Model(&Refund{}).Count(&s.Refunds).Error,
		db.Model(&ProductStats{}).Where("product_id = ?", "teapot").Select("COALESCE(MAX(views), 0)").Scan(&s.ProductViews).Error,
		db.Model(&am.ConsumerMessage{}).Count(&s.Pending).Error,
		db.Model(&am.PoisonedMessage{}).Count(&s.Poisoned).Error,
		db.Model(&am.PoisonedMessage{}).Pluck("last_error", &s.PoisonedErrors).Error,
		db.Model(&am.ScheduledMessage{}).Count(&s.Schedules).Error,
	}
	return s, errors.Join(errs...)
}

func printSummary(w io.Writer, s summary) {
	fmt.Fprintf(w, `
Summary
  domain      orders %d (cancelled %d), refunds %d, teapot views aggregated %d, e-mails sent %d
  consumer_messages   %d pending (every message was consumed or poisoned)
  poisoned_messages   %d %q
  scheduled_messages  %d schedule(s); sales reports printed: %d
`, s.Orders, s.Cancelled, s.Refunds, s.ProductViews, s.EmailsSent, s.Pending, s.Poisoned, s.PoisonedErrors, s.Schedules, s.ReportsPrinted)
}
