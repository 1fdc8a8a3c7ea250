// Command example runs two services, each with its own SQLite database, that talk through
// NATS JetStream: orders cancels orders and produces OrderCancelled in the same
// transaction; its relay publishes each to the ORDERS stream; shipping's inbox takes them
// into its own database, where its consumer stops the shipments, once each.
//
//	go run ./example                        # both services in one process, then exit
//	go run ./example -role orders -n 0      # one service per process (see docs/natsrelay.md:
//	go run ./example -role shipping         #   kill either, or NATS, and start it again)
//
// NATS is $NATS_URL or nats://127.0.0.1:4222 (nats-server -js).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/natsrelay"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// OrderCancelled is the event the two services share (each declares it; the payload
// type name and the JSON are the contract).
type OrderCancelled struct {
	OrderID int    `json:"order_id"`
	Reason  string `json:"reason"`
}

// Order is the orders service's domain table.
type Order struct {
	ID     int `gorm:"primaryKey;autoIncrement:false"`
	Status string
}

// Shipment is the shipping service's domain table.
type Shipment struct {
	OrderID int `gorm:"primaryKey;autoIncrement:false"`
	Stopped bool
}

type options struct {
	role string
	n    int
	dir  string
	url  string
}

func main() {
	var o options
	flag.StringVar(&o.role, "role", "both", "orders, shipping or both")
	flag.IntVar(&o.n, "n", 20, "orders to cancel (orders side); with -role both the demo exits once shipping stopped them all")
	flag.StringVar(&o.dir, "dir", "", "directory of the two SQLite files (default: a temporary one with -role both, else .)")
	flag.StringVar(&o.url, "nats", "", "NATS URL (default $NATS_URL or nats://127.0.0.1:4222)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "example:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, out io.Writer) error {
	if o.url == "" {
		o.url = os.Getenv("NATS_URL")
	}
	if o.url == "" {
		o.url = nats.DefaultURL
	}
	if o.dir == "" && o.role == "both" {
		dir, err := os.MkdirTemp("", "natsrelay-example-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		o.dir = dir
	} else if o.dir == "" {
		o.dir = "."
	}
	nc, err := nats.Connect(o.url, nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		return fmt.Errorf("connect to NATS at %s (start nats-server -js): %w", o.url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	// The stream both sides use: orders.> kept on disk, with a 2-minute duplicate window
	// (JetStream drops a republished Nats-Msg-Id within it).
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"},
		Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute, MaxAge: 24 * time.Hour}); err != nil {
		return fmt.Errorf("create stream ORDERS: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var stopped atomic.Int64
	var stops []func()
	defer func() {
		for _, s := range stops {
			s()
		}
	}()
	if o.role == "shipping" || o.role == "both" {
		durable := "shipping"
		if o.role == "both" {
			// A demo run has databases of its own, so it gets a durable of its own too
			// (removed at the end): the long-lived "shipping" durable's position belongs
			// to the long-lived shipping.db.
			durable = "shipping_demo_" + strings.ReplaceAll(filepath.Base(o.dir), "-", "_")
			defer func() { _ = js.DeleteConsumer(context.Background(), "ORDERS", durable) }()
		}
		s, err := startShipping(ctx, nc, filepath.Join(o.dir, "shipping.db"), durable, o.role == "both", log, out, &stopped)
		if err != nil {
			return err
		}
		stops = append(stops, s)
	}
	if o.role == "orders" || o.role == "both" {
		s, err := startOrders(ctx, nc, filepath.Join(o.dir, "orders.db"), o.n, log, out)
		if err != nil {
			return err
		}
		stops = append(stops, s)
	}
	if o.role == "both" {
		for stopped.Load() < int64(o.n) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
		fmt.Fprintf(out, "done: %d orders cancelled in orders.db, %d shipments stopped in shipping.db, each once\n", o.n, stopped.Load())
		return nil
	}
	fmt.Fprintln(out, o.role+": running; Ctrl-C to stop")
	<-ctx.Done()
	return nil
}

func openDB(path string) (*gorm.DB, error) {
	return gorm.Open(sqlite.Open("file:"+path+"?_journal_mode=WAL&_busy_timeout=5000&_txlock=immediate"), &gorm.Config{Logger: logger.Discard})
}

// startPlugin registers the plugin on db, migrates it and returns it; start runs it.
func startPlugin(ctx context.Context, db *gorm.DB, log *slog.Logger, register func(*am.Plugin) error) (func(), error) {
	p := am.New(am.Config{Logger: log})
	if err := db.Use(p); err != nil {
		return nil, err
	}
	if err := p.Migrate(ctx, db); err != nil {
		return nil, err
	}
	if err := register(p); err != nil {
		return nil, err
	}
	if err := p.Start(ctx); err != nil {
		return nil, err
	}
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.Stop(sctx)
	}, nil
}

// startOrders runs the orders service: it cancels orders [1, n] (those not cancelled
// yet), each in a transaction that also produces OrderCancelled, and relays them.
func startOrders(ctx context.Context, nc *nats.Conn, path string, n int, log *slog.Logger, out io.Writer) (func(), error) {
	db, err := openDB(path)
	if err != nil {
		return nil, err
	}
	if err := db.AutoMigrate(&Order{}); err != nil {
		return nil, err
	}
	relay, err := natsrelay.NewRelay(nc, natsrelay.RelayConfig{SubjectPrefix: "orders", Logger: log})
	if err != nil {
		return nil, err
	}
	stop, err := startPlugin(ctx, db, log, func(p *am.Plugin) error { return natsrelay.Forward[OrderCancelled](p, relay) })
	if err != nil {
		return nil, err
	}
	for id := 1; id <= n; id++ {
		err := db.Transaction(func(tx *gorm.DB) error {
			var o Order
			if tx.Limit(1).Find(&o, id); o.Status == "cancelled" {
				return errAlready
			}
			if err := tx.Save(&Order{ID: id, Status: "cancelled"}).Error; err != nil {
				return err
			}
			return am.ProduceTx(tx, OrderCancelled{OrderID: id, Reason: "customer request"})
		})
		switch {
		case errors.Is(err, errAlready):
		case err != nil:
			stop()
			return nil, err
		default:
			fmt.Fprintf(out, "orders:   order %d cancelled; OrderCancelled committed with it (subject orders.OrderCancelled)\n", id)
		}
	}
	return stop, nil
}

var errAlready = errors.New("already cancelled")

// startShipping runs the shipping service: its inbox takes OrderCancelled from the
// ORDERS stream into shipping.db, where its consumer stops the shipment.
func startShipping(ctx context.Context, nc *nats.Conn, path, durable string, demo bool, log *slog.Logger, out io.Writer, stopped *atomic.Int64) (func(), error) {
	db, err := openDB(path)
	if err != nil {
		return nil, err
	}
	if err := db.AutoMigrate(&Shipment{}); err != nil {
		return nil, err
	}
	stop, err := startPlugin(ctx, db, log, func(p *am.Plugin) error {
		return am.Register[OrderCancelled](p, am.ConsumerFunc[OrderCancelled](func(ctx context.Context, m *am.Message[OrderCancelled]) error {
			// Written in Message.Tx: it commits with the message's completion, once.
			if err := m.Tx.Create(&Shipment{OrderID: m.Payload.OrderID, Stopped: true}).Error; err != nil {
				return err
			}
			stopped.Add(1)
			fmt.Fprintf(out, "shipping: shipment of order %d stopped (%s)\n", m.Payload.OrderID, m.Payload.Reason)
			return nil
		}), am.WithName("StopShipment"))
	})
	if err != nil {
		return nil, err
	}
	in, err := natsrelay.NewInbox(ctx, db, nc, natsrelay.InboxConfig{Stream: "ORDERS", Durable: durable, DeliverNew: demo, Logger: log})
	if err != nil {
		stop()
		return nil, err
	}
	if err := natsrelay.Accept[OrderCancelled](in); err != nil {
		stop()
		return nil, err
	}
	if err := in.Start(ctx); err != nil {
		stop()
		return nil, err
	}
	return func() { _ = in.Stop(context.Background()); stop() }, nil
}
