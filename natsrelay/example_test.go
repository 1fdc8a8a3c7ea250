package natsrelay_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/natsrelay"
	"github.com/nats-io/nats.go"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// The sending service relays its OrderCancelled messages to JetStream: each is published
// to asyncmonolith.OrderCancelled and completed once JetStream acknowledged it. (It needs
// a stream capturing the subject; see ExampleNewInbox.)
func ExampleForward() {
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	db := openExampleDB("orders.db")
	p := am.New(am.Config{})
	if err := db.Use(p); err != nil {
		log.Fatal(err)
	}
	relay, err := natsrelay.NewRelay(nc, natsrelay.RelayConfig{})
	if err != nil {
		log.Fatal(err)
	}
	if err := natsrelay.Forward[OrderCancelled](p, relay); err != nil {
		log.Fatal(err)
	}
	// The relay is the consumer natsrelay.OrderCancelled. Start the plugin as usual:
	// Produce(tx, OrderCancelled{...}) in a transaction now reaches JetStream after the
	// commit.
}

// The receiving service takes OrderCancelled from the ORDERS stream into its own
// database, where its consumers run on it as on any local message.
func ExampleNewInbox() {
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	db := openExampleDB("shipping.db")
	p := am.New(am.Config{})
	if err := db.Use(p); err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	in, err := natsrelay.NewInbox(ctx, db, nc, natsrelay.InboxConfig{Stream: "ORDERS", Durable: "shipping"})
	if err != nil {
		log.Fatal(err)
	}
	if err := natsrelay.Accept[OrderCancelled](in); err != nil {
		log.Fatal(err)
	}
	if err := in.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer in.Stop(ctx)
}

// Bad subjects are refused before anything is sent: the message is poisoned with the reason.
func ExampleCheckSubject() {
	fmt.Println(natsrelay.CheckSubject("orders.OrderCancelled"))
	err := natsrelay.CheckSubject("orders.order cancelled")
	fmt.Println(errors.Is(err, natsrelay.ErrInvalidSubject), errors.Is(err, am.ErrPermanent))
	fmt.Println(err)
	// Output:
	// <nil>
	// true false
	// natsrelay: invalid subject: "orders.order cancelled": contains whitespace or a control character
}

// Settings are validated once, with errors that name the field.
func ExampleNewInbox_configError() {
	_, err := natsrelay.NewInbox(context.Background(), &gorm.DB{}, &nats.Conn{}, natsrelay.InboxConfig{Stream: "ORDERS"})
	var ce *natsrelay.ConfigError
	fmt.Println(errors.As(err, &ce), ce.Field)
	// Output: true InboxConfig.Durable
}

func openExampleDB(name string) *gorm.DB {
	dir, err := os.MkdirTemp("", "natsrelay-example-")
	if err != nil {
		log.Fatal(err)
	}
	db, err := gorm.Open(sqlite.Open(filepath.Join(dir, name)), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		log.Fatal(err)
	}
	return db
}
