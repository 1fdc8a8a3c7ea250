package compat_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
	"gorm.io/plugin/dbresolver"
)

// The replica is a second schema (PostgreSQL) or database (MariaDB) with the same tables
// but not the source's rows, as a lagging replica: it holds only stale rows of its own.
// Any read of the flow served by it would see them, or miss the source's rows.
const (
	staleOrder    = "stale-order"
	staleMessage  = "stale-message"
	stalePoisoned = "stale-poisoned"
	staleSchedule = "stale-schedule"
)

// seedReplica gives the replica the schema and the stale rows.
func seedReplica(t *testing.T, dialect, dsn string) {
	t.Helper()
	db := open(t, dialect, dsn, nil)
	if err := am.New(am.Config{}).Migrate(context.Background(), db); err != nil {
		t.Fatalf("migrate the replica: %v", err)
	}
	if err := db.AutoMigrate(&Order{}); err != nil {
		t.Fatal(err)
	}
	for _, row := range []any{
		&Order{ID: staleOrder, Note: "replica"},
		&am.ConsumerMessage{ID: staleMessage, CreatedAt: 1, AvailableAfter: 1, ConsumerType: readerName,
			PayloadType: "OrderPlaced", Payload: `{"order_id":"` + staleOrder + `"}`, InsertID: staleMessage},
		&am.PoisonedMessage{ID: stalePoisoned, CreatedAt: 1, AvailableAfter: 1, ConsumerType: fragileName,
			PayloadType: "Fragile", Payload: `{"n":0}`, InsertID: stalePoisoned, LastError: "stale", PoisonedAt: 1},
		&am.ScheduledMessage{ID: staleSchedule, AvailableAfter: 1, ChronExpression: "@every 1m", ChronTimezone: "UTC",
			PayloadType: "Reminder", Payload: `{"n":0}`},
	} {
		if err := db.Create(row).Error; err != nil {
			t.Fatalf("seed the replica: %v", err)
		}
	}
}

// closeResolver closes the pools dbresolver opened when the test ends.
func closeResolver(t *testing.T, dr *dbresolver.DBResolver) {
	t.Cleanup(func() {
		_ = dr.Call(func(pool gorm.ConnPool) error {
			if s, ok := pool.(*sql.DB); ok {
				s.Close()
			}
			return nil
		})
	})
}

// resolverSetup is one way of configuring dbresolver and the *gorm.DB.
type resolverSetup struct {
	name          string
	prepareStmt   bool // gorm.Config.PrepareStmt
	listedSources bool // Config.Sources names the source (a pool of its own) instead of defaulting to db's
}

func TestDBResolverSourceAndLaggingReplica(t *testing.T) {
	setups := []resolverSetup{{name: "default source"}, {name: "PrepareStmt", prepareStmt: true}, {name: "listed source", listedSources: true}}
	for _, dialect := range dialects {
		for _, order := range []string{"resolver first", "resolver second"} {
			for _, s := range setups {
				t.Run(dialect+"/"+order+"/"+s.name, func(t *testing.T) {
					testResolver(t, dialect, order == "resolver first", s)
				})
			}
		}
	}
}

func testResolver(t *testing.T, dialect string, resolverFirst bool, setup resolverSetup) {
	ctx := context.Background()
	sourceDSN, replicaDSN := freshDSN(t, dialect), freshDSN(t, dialect)
	seedReplica(t, dialect, replicaDSN)
	source := open(t, dialect, sourceDSN, nil) // a plain look at the source
	if err := source.AutoMigrate(&Order{}); err != nil {
		t.Fatal(err)
	}

	db := open(t, dialect, sourceDSN, &gorm.Config{PrepareStmt: setup.prepareStmt})
	p, c, clk := newPlugin(t)
	cfg := dbresolver.Config{Replicas: []gorm.Dialector{dialector(dialect, replicaDSN)}}
	if setup.listedSources {
		cfg.Sources = []gorm.Dialector{dialector(dialect, sourceDSN)}
	}
	dr := dbresolver.Register(cfg)
	closeResolver(t, dr)
	plugins := []gorm.Plugin{p, dr}
	if resolverFirst {
		plugins = []gorm.Plugin{dr, p}
	}
	for _, pl := range plugins {
		if err := db.Use(pl); err != nil {
			t.Fatalf("db.Use(%s): %v", pl.Name(), err)
		}
	}

	// Migrate creates the tables on the source, though the replica has them already.
	if err := p.Migrate(ctx, db); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if !source.Migrator().HasTable(&am.ConsumerMessage{}) {
		t.Fatal("Migrate did not create consumer_messages on the source")
	}

	// The resolver is live: the application's reads outside a transaction go to the replica.
	var stale int64
	if err := db.Model(&Order{}).Where("id = ?", staleOrder).Count(&stale).Error; err != nil || stale != 1 {
		t.Fatalf("a plain read found %d replica-only orders (%v): the replica is not in use, the test proves nothing", stale, err)
	}

	runFlow(t, db, p, c, clk)

	if _, err := p.GetPoisoned(ctx, stalePoisoned); !errors.Is(err, am.ErrMessageNotFound) {
		t.Fatalf("GetPoisoned(replica-only id) = %v, want ErrMessageNotFound", err)
	}
	if _, err := p.GetSchedule(ctx, staleSchedule); !errors.Is(err, am.ErrScheduleNotFound) {
		t.Fatalf("GetSchedule(replica-only id) = %v, want ErrScheduleNotFound", err)
	}
	// Everything the flow wrote is on the source, and the replica's rows were left alone.
	var orders, onReplica int64
	source.Model(&Order{}).Count(&orders)
	replica := open(t, dialect, replicaDSN, nil)
	replica.Model(&am.ConsumerMessage{}).Where("id = ?", staleMessage).Count(&onReplica)
	if orders != 2 || onReplica != 1 {
		t.Fatalf("source orders = %d (want 2), replica's stale message rows = %d (want 1)", orders, onReplica)
	}
}
