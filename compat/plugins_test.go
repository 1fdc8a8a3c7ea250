package compat_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
	"gorm.io/plugin/opentelemetry/tracing"
	"gorm.io/plugin/prometheus"
)

// flowWith registers the flow's plugin on db (after the plugins in before, before those in
// after), migrates, and runs the conformance flow.
func flowWith(t *testing.T, db *gorm.DB, before, after []gorm.Plugin) {
	t.Helper()
	p, c, clk := newPlugin(t)
	for _, pl := range append(append(append([]gorm.Plugin(nil), before...), p), after...) {
		if err := db.Use(pl); err != nil {
			t.Fatalf("db.Use(%s): %v", pl.Name(), err)
		}
	}
	if err := p.Migrate(context.Background(), db); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if err := db.AutoMigrate(&Order{}); err != nil {
		t.Fatal(err)
	}
	runFlow(t, db, p, c, clk)
}

// eachOrder runs fn with the other plugin registered before asyncmonolith, then after it.
func eachOrder(t *testing.T, fn func(t *testing.T, dialect string, first bool)) {
	for _, dialect := range dialects {
		for _, first := range []bool{true, false} {
			name := dialect + "/registered after it"
			if first {
				name = dialect + "/registered before it"
			}
			t.Run(name, func(t *testing.T) { fn(t, dialect, first) })
		}
	}
}

// split puts pl before or after asyncmonolith.
func split(pl gorm.Plugin, first bool) (before, after []gorm.Plugin) {
	if first {
		return []gorm.Plugin{pl}, nil
	}
	return nil, []gorm.Plugin{pl}
}

func TestOpenTelemetryTracing(t *testing.T) {
	eachOrder(t, func(t *testing.T, dialect string, first bool) {
		spans := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
		t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		db := open(t, dialect, freshDSN(t, dialect), nil)
		before, after := split(tracing.NewPlugin(tracing.WithTracerProvider(tp), tracing.WithoutMetrics()), first)
		flowWith(t, db, before, after)
		names := map[string]int{}
		for _, s := range spans.Ended() {
			names[s.Name()]++
		}
		// The application's two order inserts (one flushing the buffered message) and the
		// consumers' reads of them through Message.Tx are traced as usual.
		if names["insert orders"] != 2 || names["select orders"] != 2 {
			t.Fatalf("spans by name %v, want 2 \"insert orders\" and 2 \"select orders\"", names)
		}
	})
}

func TestPrometheus(t *testing.T) {
	eachOrder(t, func(t *testing.T, dialect string, first bool) {
		db := open(t, dialect, freshDSN(t, dialect), nil)
		metrics := prometheus.New(prometheus.Config{DBName: fmt.Sprintf("compat_%s_%t", dialect, first), RefreshInterval: 1})
		before, after := split(metrics, first)
		flowWith(t, db, before, after)
		// Its refresh loop reads the pool asyncmonolith shares (open sets 8 connections).
		deadline := time.Now().Add(10 * time.Second)
		for promtest.ToFloat64(metrics.DBStats.MaxOpenConnections) != 8 {
			if time.Now().After(deadline) {
				t.Fatalf("gorm_dbstats_max_open_connections = %v after 10 s, want 8",
					promtest.ToFloat64(metrics.DBStats.MaxOpenConnections))
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

func TestPrepareStmt(t *testing.T) {
	for _, dialect := range dialects {
		t.Run(dialect, func(t *testing.T) {
			db := open(t, dialect, freshDSN(t, dialect), &gorm.Config{PrepareStmt: true})
			flowWith(t, db, nil, nil)
			if _, ok := db.ConnPool.(*gorm.PreparedStmtDB); !ok {
				t.Fatalf("ConnPool is %T, want *gorm.PreparedStmtDB", db.ConnPool)
			}
		})
	}
}

// A *gorm.DB opened on a *sql.DB the application opened itself (pgx's stdlib driver,
// go-sql-driver/mysql).
func TestExistingSQLDB(t *testing.T) {
	for _, dialect := range dialects {
		t.Run(dialect, func(t *testing.T) {
			sqlDB, err := sql.Open(driverName(dialect), freshDSN(t, dialect))
			if err != nil {
				t.Fatal(err)
			}
			var d gorm.Dialector = mysql.New(mysql.Config{Conn: sqlDB})
			if dialect == "postgres" {
				d = postgres.New(postgres.Config{Conn: sqlDB})
			}
			db, err := gorm.Open(d, &gorm.Config{Logger: logger.Discard})
			if err != nil {
				t.Fatal(err)
			}
			closeWhenDone(t, db)
			flowWith(t, db, nil, nil)
			if got, _ := db.DB(); got != sqlDB {
				t.Fatal("the *gorm.DB does not use the application's *sql.DB")
			}
		})
	}
}
