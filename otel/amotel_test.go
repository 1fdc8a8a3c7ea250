package amotel_test

import (
	"context"
	"errors"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	amtest "github.com/asyncmonolith/asyncmonolith/asyncmonolithtest"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	amotel "github.com/asyncmonolith/asyncmonolith/otel"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"gorm.io/gorm"
)

type Shipped struct {
	OrderID string `json:"order_id"`
}

func TestTracesAndMetrics(t *testing.T) {
	t.Parallel()
	for _, dialect := range []string{"sqlite", "postgres", "mysql"} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			spans := tracetest.NewInMemoryExporter()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
			reader := sdkmetric.NewManualReader()
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			inst, err := amotel.New(amotel.WithTracerProvider(tp), amotel.WithMeterProvider(mp))
			if err != nil {
				t.Fatal(err)
			}
			clock := amtest.NewClock(time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC))
			db, p := observedFailing(t, dialect, inst, am.Config{Hooks: inst.Hooks(), Clock: clock, AttemptDelay: time.Second, MaxAttempts: 2})

			// Produce inside a request span.
			ctx, request := tp.Tracer("test").Start(context.Background(), "POST /ship")
			if err := am.ProduceNow(ctx, db, Shipped{OrderID: "1"}); err != nil {
				t.Fatal(err)
			}
			request.End()

			var rm metricdata.ResourceMetrics
			if err := reader.Collect(context.Background(), &rm); err != nil {
				t.Fatal(err)
			}
			if got := sum(rm, "asyncmonolith.messages.produced"); got != 1 {
				t.Fatalf("produced = %v", got)
			}
			if got := gauge(rm, "asyncmonolith.queue.depth"); got != 1 {
				t.Fatalf("queue depth = %v", got)
			}

			for range 2 { // attempt 1 fails and retries, attempt 2 fails and poisons
				if _, err := p.ProcessBatch(context.Background()); err != nil {
					t.Fatal(err)
				}
				clock.Advance(time.Second)
			}
			var consumeSpans []sdktrace.ReadOnlySpan
			for _, s := range spans.GetSpans().Snapshots() {
				if s.Name() == "process Notify" {
					consumeSpans = append(consumeSpans, s)
				}
			}
			if len(consumeSpans) != 2 {
				t.Fatalf("%d consumer spans, want 2 (one per attempt)", len(consumeSpans))
			}
			for _, s := range consumeSpans {
				if s.SpanContext().TraceID() != request.SpanContext().TraceID() || s.Parent().SpanID() != request.SpanContext().SpanID() {
					t.Fatalf("consumer span is not a child of the producing request: parent %v", s.Parent())
				}
				if s.Status().Code != codes.Error || s.Status().Description != "carrier down" {
					t.Fatalf("status = %+v", s.Status())
				}
			}
			rm = metricdata.ResourceMetrics{}
			if err := reader.Collect(context.Background(), &rm); err != nil {
				t.Fatal(err)
			}
			if got := sum(rm, "asyncmonolith.messages.failed"); got != 2 {
				t.Fatalf("failed = %v", got)
			}
			if got := sum(rm, "asyncmonolith.messages.poisoned"); got != 1 {
				t.Fatalf("poisoned = %v", got)
			}
			if got := gauge(rm, "asyncmonolith.poisoned.depth"); got != 1 {
				t.Fatalf("poisoned depth = %v", got)
			}
		})
	}
}

func sum(rm metricdata.ResourceMetrics, name string) int64 {
	var total int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if s, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == name {
				for _, dp := range s.DataPoints {
					total += dp.Value
				}
			}
		}
	}
	return total
}

func gauge(rm metricdata.ResourceMetrics, name string) int64 {
	var total int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if g, ok := m.Data.(metricdata.Gauge[int64]); ok && m.Name == name {
				for _, dp := range g.DataPoints {
					total += dp.Value
				}
			}
		}
	}
	return total
}

// A paused consumer shows in asyncmonolith.consumer.paused, and what its breaker set
// aside in asyncmonolith.messages.set_aside.
func TestBreakerMetrics(t *testing.T) {
	t.Parallel()
	reader := sdkmetric.NewManualReader()
	inst, err := amotel.New(amotel.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
	if err != nil {
		t.Fatal(err)
	}
	db, p := observedFailing(t, "sqlite", inst, am.Config{Hooks: inst.Hooks(), BreakerFailures: 1, ConsumerConcurrency: 1}) // one at a time: the second is set aside
	for _, id := range []string{"1", "2"} {
		if err := am.ProduceNow(context.Background(), db, Shipped{OrderID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.ProcessBatch(context.Background()); err != nil { // the first fails and pauses Notify
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	if got := gauge(rm, "asyncmonolith.consumer.paused"); got != 1 {
		t.Fatalf("paused consumers = %v, want 1", got)
	}
	if got := sum(rm, "asyncmonolith.messages.set_aside"); got < 1 {
		t.Fatalf("set aside = %v, want at least the second message", got)
	}
	if got := sum(rm, "asyncmonolith.batches.conflicts"); got != 0 {
		t.Fatalf("conflicts = %v", got)
	}
}

// A run cut short by a hard stop shows in asyncmonolith.messages.released, not as a
// failure.
func TestReleasedMetric(t *testing.T) {
	t.Parallel()
	reader := sdkmetric.NewManualReader()
	inst, err := amotel.New(amotel.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
	if err != nil {
		t.Fatal(err)
	}
	db := testdb.Open(t, "sqlite")
	p := am.New(am.Config{Hooks: inst.Hooks()})
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	if err := p.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	if err := am.Register[Shipped](p, am.ConsumerFunc[Shipped](func(ctx context.Context, m *am.Message[Shipped]) error {
		close(started)
		<-ctx.Done() // waits for the stop
		return ctx.Err()
	}), am.WithName("Waiter")); err != nil {
		t.Fatal(err)
	}
	reg, err := inst.ObserveQueue(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Unregister() })
	if err := am.ProduceNow(context.Background(), db, Shipped{OrderID: "1"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-started; cancel() }()
	if _, err := p.ProcessBatch(ctx); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	if got := sum(rm, "asyncmonolith.messages.released"); got != 1 {
		t.Fatalf("released = %v, want 1 (counters %+v)", got, p.Counters())
	}
	for _, name := range []string{"asyncmonolith.messages.lease_lost", "asyncmonolith.batches.errors"} {
		if got := sum(rm, name); got != 0 {
			t.Fatalf("%s = %v, want 0", name, got)
		}
	}
	if c := p.Counters(); c.Failed != 0 || c.Released != 1 {
		t.Fatalf("counters %+v: the stop was counted as a failure", c)
	}
}

// observedFailing opens a fresh database with a plugin of cfg whose only consumer,
// "Notify", always fails, and observes its queue with inst until the test ends.
func observedFailing(t *testing.T, dialect string, inst *amotel.Instrumentation, cfg am.Config) (*gorm.DB, *am.Plugin) {
	t.Helper()
	db := testdb.Open(t, dialect)
	p := am.New(cfg)
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	if err := p.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	if err := am.Register[Shipped](p, am.ConsumerFunc[Shipped](func(ctx context.Context, m *am.Message[Shipped]) error {
		return errors.New("carrier down")
	}), am.WithName("Notify")); err != nil {
		t.Fatal(err)
	}
	reg, err := inst.ObserveQueue(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Unregister() })
	return db, p
}

// A schedule that fires counts in asyncmonolith.schedules.fired; one skipped as broken
// counts in asyncmonolith.schedules.skipped, and not as fired.
func TestScheduleMetrics(t *testing.T) {
	t.Parallel()
	reader := sdkmetric.NewManualReader()
	inst, err := amotel.New(amotel.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	clk := amtest.NewClock(now)
	db, p := observedFailing(t, "sqlite", inst, am.Config{Hooks: inst.Hooks(), Clock: clk})
	ctx := t.Context()
	if _, err := am.Schedule(ctx, db, Shipped{OrderID: "ok"}, "@every 1m"); err != nil {
		t.Fatal(err)
	}
	broken, err := am.Schedule(ctx, db, Shipped{OrderID: "broken"}, "@every 1m")
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Model(&am.ScheduledMessage{}).Where("id = ?", broken).Update("chron_expression", "not a cron").Error; err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	clk.Set(now)
	if n, err := p.FireSchedules(ctx); err != nil || n != 2 {
		t.Fatalf("FireSchedules = %d, %v; want the 2 due schedules", n, err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	if fired, skipped := sum(rm, "asyncmonolith.schedules.fired"), sum(rm, "asyncmonolith.schedules.skipped"); fired != 1 || skipped != 1 {
		t.Fatalf("fired %d, skipped %d; want 1 and 1", fired, skipped)
	}
}

// A snoozed run counts in asyncmonolith.messages.snoozed, not as a failure, and its span
// is not an error.
func TestSnoozedIsNotAFailure(t *testing.T) {
	t.Parallel()
	spans := tracetest.NewInMemoryExporter()
	reader := sdkmetric.NewManualReader()
	inst, err := amotel.New(amotel.WithTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))),
		amotel.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
	if err != nil {
		t.Fatal(err)
	}
	db := testdb.Open(t, "sqlite")
	p := am.New(am.Config{Hooks: inst.Hooks()})
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	if err := p.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	if err := am.Register[Shipped](p, am.ConsumerFunc[Shipped](func(ctx context.Context, m *am.Message[Shipped]) error {
		return am.SnoozeFor(time.Minute)
	}), am.WithName("Snoozer")); err != nil {
		t.Fatal(err)
	}
	if err := am.ProduceNow(context.Background(), db, Shipped{OrderID: "1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.ProcessBatch(context.Background()); err != nil {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	if s, f := sum(rm, "asyncmonolith.messages.snoozed"), sum(rm, "asyncmonolith.messages.failed"); s != 1 || f != 0 {
		t.Fatalf("snoozed = %v, failed = %v; want 1, 0", s, f)
	}
	found := false
	for _, s := range spans.GetSpans().Snapshots() {
		if s.Name() == "process Snoozer" {
			found = true
			if s.Status().Code == codes.Error {
				t.Fatalf("a snoozed run's span is an error: %+v", s.Status())
			}
		}
	}
	if !found {
		t.Fatal("no span for the snoozed run")
	}
}
