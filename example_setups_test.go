package asyncmonolith_test

import (
	"context"
	"fmt"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
)

// Behind PgBouncer in transaction mode: the pool goes through PgBouncer without pgx's
// statement cache, and the listener has a connection of its own, straight to the server.
// (Compiled only: it needs the servers.)
func ExampleConfig_pgBouncer() {
	db, err := gorm.Open(postgres.Open("host=pgbouncer port=6432 user=app dbname=app default_query_exec_mode=exec"), &gorm.Config{})
	if err != nil {
		panic(err)
	}
	p := am.New(am.Config{ListenDSN: "host=db port=5432 user=app dbname=app"})
	if err := db.Use(p); err != nil {
		panic(err) // a *ConfigError naming ListenDSN if it does not parse
	}
	if err := p.Start(context.Background()); err != nil {
		panic(err)
	}
	defer p.Stop(context.Background())
}

// PollOnly runs no listener: processors find other processes' commits by polling, and
// every pooled connection stays the application's.
func ExampleConfig_pollOnly() {
	db, p, cleanup := exampleDBWith(am.Config{PollOnly: true, ProcessorMaxDelay: 50 * time.Millisecond})
	defer cleanup()
	done := make(chan string, 1)
	err := am.Register[PaymentFailed](p, am.ConsumerFunc[PaymentFailed](func(ctx context.Context, m *am.Message[PaymentFailed]) error {
		done <- m.Payload.PaymentID
		return nil
	}))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	if err := p.Start(ctx); err != nil {
		panic(err)
	}
	defer p.Stop(ctx)
	if err := am.ProduceNow(ctx, db, PaymentFailed{PaymentID: "p-1"}); err != nil {
		panic(err)
	}
	fmt.Println("consumed", <-done)
	// Output: consumed p-1
}
