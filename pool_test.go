package asyncmonolith_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"gorm.io/gorm"
)

// querySoon runs a plain SELECT that must get a connection: a listener holding the pool's
// only connection makes it wait until its deadline (a deadlock, not a slow query).
func querySoon(t *testing.T, db *gorm.DB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var one int
	if err := db.WithContext(ctx).Raw("SELECT 1").Scan(&one).Error; err != nil || one != 1 {
		t.Fatalf("a plain SELECT beside the started plugin: %v (the pool's connection is held)", err)
	}
}

// TestPoolOfOneStartDoesNotStarve: with SetMaxOpenConns(1) the listener takes no
// connection, so the application and the processors keep the only one.
func TestPoolOfOneStartDoesNotStarve(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{}, testdb.Options{MaxOpenConns: 1})
		a, _ := registerBoth(t, e)
		e.start(t)
		// The listener, were it to start, takes the connection at once; processors poll
		// every 50 ms and give it back between batches. Consumption shows the processors run.
		if err := am.ProduceNow(context.Background(), e.db, OrderCancelled{OrderID: "1"}); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool { return a.count() == 1 }, "consumed with a pool of one")
		querySoon(t, e.db)
		if err := am.ProduceNow(context.Background(), e.db, OrderCancelled{OrderID: "2"}); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool { return a.count() == 2 }, "consumed with a pool of one")
	})
}

// TestListenDSNListensOutsideThePool: with ListenDSN the listener has a connection of its
// own, so a pool of one still hears other instances' commits (processors poll hourly here).
func TestListenDSNListensOutsideThePool(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.OpenDSN(t, "postgres", testdb.Options{MaxOpenConns: 1})
	e := setupOn(t, db, am.Config{ListenDSN: dsn, ProcessorMaxDelay: time.Hour, ProcessorMinDelay: time.Millisecond})
	a, _ := registerBoth(t, e)
	if err := am.ProduceNow(context.Background(), e.db, OrderCancelled{OrderID: "warm-up"}); err != nil {
		t.Fatal(err)
	}
	e.start(t)
	eventually(t, func() bool { return a.count() == 1 }, "the first poll consumed the warm-up message")
	querySoon(t, e.db)
	eventually(t, func() bool { return listeners(t, e.db) == 1 }, "the listener subscribed on its own connection")
	producer := instance(t, e.db, "postgres", am.Config{Clock: e.clock})
	registerBoth(t, &env{db: e.db, p: producer})
	if err := am.ProduceNow(context.Background(), producerDB(t, producer), OrderCancelled{OrderID: "x"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return a.count() == 2 }, "a commit in another instance woke the processors through the ListenDSN listener")
}

// TestPollOnlyPollsAndHoldsNoConnection: PollOnly starts no listener; commits of other
// instances are found by polling.
func TestPollOnlyPollsAndHoldsNoConnection(t *testing.T) {
	t.Parallel()
	e := setup(t, "postgres", am.Config{PollOnly: true})
	a, _ := registerBoth(t, e)
	producer := instance(t, e.db, "postgres", am.Config{Clock: e.clock})
	registerBoth(t, &env{db: e.db, p: producer})
	e.start(t)
	if err := am.ProduceNow(context.Background(), producerDB(t, producer), OrderCancelled{OrderID: "x"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return a.count() == 1 }, "polling found another instance's commit")
	if n := listeners(t, e.db); n != 0 {
		t.Fatalf("%d LISTEN sessions with PollOnly", n)
	}
}

func TestListenConfigValidation(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-password"
	cases := []struct {
		dialect string
		cfg     am.Config
		reason  string
	}{
		{"sqlite", am.Config{ListenDSN: "host=127.0.0.1"}, "PostgreSQL only"},
		{"mysql", am.Config{ListenDSN: "host=127.0.0.1"}, "PostgreSQL only"},
		{"postgres", am.Config{ListenDSN: "host=127.0.0.1", PollOnly: true}, "PollOnly"},
		{"postgres", am.Config{ListenDSN: "host=127.0.0.1 password=" + secret + " port=not-a-port"}, "does not parse"},
	}
	for _, c := range cases {
		db := testdb.Open(t, c.dialect)
		err := db.Use(am.New(c.cfg))
		var ce *am.ConfigError
		if !errors.Is(err, am.ErrInvalidConfig) || !errors.As(err, &ce) || ce.Field != "ListenDSN" || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%s %+v: err = %v, want a ConfigError naming ListenDSN (%s)", c.dialect, c.cfg, err, c.reason)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows the DSN's password: %v", err)
		}
	}
}

// listeners counts the PostgreSQL sessions listening for db's schema.
func listeners(t *testing.T, db *gorm.DB) int64 {
	t.Helper()
	var schema string
	var n int64
	if err := db.Raw("SELECT current_schema()").Scan(&schema).Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Raw(`SELECT COUNT(*) FROM pg_stat_activity WHERE query = ?`, `LISTEN "asyncmonolith:`+schema+`"`).Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

// TestListenDSNOnAnotherDatabaseIsReported: a ListenDSN that reaches another database
// would hear nothing; the listener says so in the log instead of listening in vain.
func TestListenDSNOnAnotherDatabaseIsReported(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	db := testdb.Open(t, "postgres")
	var pooled string
	if err := db.Raw("SELECT current_database()").Scan(&pooled).Error; err != nil {
		t.Fatal(err)
	}
	other := "postgres"
	if pooled == other {
		other = "template1"
	}
	dsn := testdb.PostgresDSN("public") + " dbname=" + other
	e := setupOn(t, db, am.Config{ListenDSN: dsn, Logger: newTextLogger(&logs)})
	e.start(t)
	want := fmt.Sprintf(`the listen DSN reaches database \"%s\", the pool database \"%s\"`, other, pooled)
	eventually(t, func() bool { return strings.Contains(logs.String(), want) }, "the listener reported the other database")
}
