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
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// TestRailGauges: the asyncmonolith.rail.* gauges show every rail the plugin runs (an
// empty one as zeros), a rail found only on stored rows, and each rail's pending, running,
// due, oldest due age and poisoned counts; the per-consumer gauges carry the rail too.
func TestRailGauges(t *testing.T) {
	t.Parallel()
	for _, dialect := range testdb.Dialects {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			reader := sdkmetric.NewManualReader()
			inst, err := amotel.New(amotel.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
			if err != nil {
				t.Fatal(err)
			}
			now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
			clk := amtest.NewClock(now)
			db := testdb.Open(t, dialect)
			p := am.New(am.Config{Hooks: inst.Hooks(), Clock: clk, MaxAttempts: 1,
				Rails: map[string]am.RailConfig{"slow": {}, "idle": {}}})
			if err := db.Use(p); err != nil {
				t.Fatal(err)
			}
			if err := p.Migrate(ctx, db); err != nil {
				t.Fatal(err)
			}
			fail := am.ConsumerFunc[Shipped](func(context.Context, *am.Message[Shipped]) error { return errors.New("down") })
			if err := am.Register[Shipped](p, fail, am.WithName("Fast")); err != nil {
				t.Fatal(err)
			}
			if err := am.Register[Shipped](p, fail, am.WithName("Slow"), am.WithRail("slow")); err != nil {
				t.Fatal(err)
			}
			reg, err := inst.ObserveQueue(p)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = reg.Unregister() })

			// One message per consumer poisoned (MaxAttempts 1), then two more each, due
			// 30 s ago, of which one of the slow rail's is claimed (running, lease ahead).
			if err := am.ProduceNow(ctx, db, Shipped{OrderID: "0"}); err != nil {
				t.Fatal(err)
			}
			if _, err := p.ProcessBatch(ctx); err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{"1", "2"} {
				if err := am.ProduceNow(ctx, db, Shipped{OrderID: id}); err != nil {
					t.Fatal(err)
				}
			}
			now = now.Add(30 * time.Second)
			clk.Set(now)
			var claimed am.ConsumerMessage
			if err := db.Where("rail = ?", "slow").Order("id").Take(&claimed).Error; err != nil {
				t.Fatal(err)
			}
			if err := db.Model(&am.ConsumerMessage{}).Where("id = ?", claimed.ID).
				Updates(map[string]any{"pending": nil, "available_after": now.Add(time.Minute).UnixMilli()}).Error; err != nil {
				t.Fatal(err)
			}
			ghost := am.ConsumerMessage{ID: "ghost-1", CreatedAt: now.Add(-10 * time.Second).UnixMilli(), AvailableAfter: now.Add(-10 * time.Second).UnixMilli(),
				ConsumerType: "Gone", PayloadType: "Shipped", Payload: "{}", InsertID: "ghost-1", Rail: "ghost"}
			if err := db.Create(&ghost).Error; err != nil {
				t.Fatal(err)
			}

			var rm metricdata.ResourceMetrics
			if err := reader.Collect(ctx, &rm); err != nil {
				t.Fatal(err)
			}
			type row struct {
				pending, running, due, poisoned int64
				age                             float64
			}
			want := map[string]row{
				"":      {pending: 2, due: 2, poisoned: 1, age: 30},
				"slow":  {pending: 2, running: 1, due: 1, poisoned: 1, age: 30},
				"idle":  {},
				"ghost": {pending: 1, due: 1, age: 10},
			}
			got := map[string]row{}
			for _, m := range rm.ScopeMetrics[0].Metrics {
				switch d := m.Data.(type) {
				case metricdata.Gauge[int64]:
					for _, dp := range d.DataPoints {
						rail, ok := dp.Attributes.Value(amotel.RailAttribute)
						if !ok {
							continue
						}
						r := got[rail.AsString()]
						switch m.Name {
						case "asyncmonolith.rail.pending":
							r.pending = dp.Value
						case "asyncmonolith.rail.running":
							r.running = dp.Value
						case "asyncmonolith.rail.due":
							r.due = dp.Value
						case "asyncmonolith.rail.poisoned":
							r.poisoned = dp.Value
						default:
							continue
						}
						got[rail.AsString()] = r
					}
				case metricdata.Gauge[float64]:
					for _, dp := range d.DataPoints {
						if rail, ok := dp.Attributes.Value(amotel.RailAttribute); ok && m.Name == "asyncmonolith.rail.oldest_due_age" {
							r := got[rail.AsString()]
							r.age = dp.Value
							got[rail.AsString()] = r
						}
					}
				}
			}
			if len(got) != len(want) {
				t.Fatalf("rails observed: %+v, want %+v", got, want)
			}
			for rail, w := range want {
				if got[rail] != w {
					t.Fatalf("rail %q: %+v, want %+v", rail, got[rail], w)
				}
			}
			// The per-consumer depth names the consumer's rail.
			depth := map[string]string{}
			for _, m := range rm.ScopeMetrics[0].Metrics {
				if g, ok := m.Data.(metricdata.Gauge[int64]); ok && m.Name == "asyncmonolith.queue.depth" {
					for _, dp := range g.DataPoints {
						c, _ := dp.Attributes.Value(attribute.Key("messaging.destination.name"))
						r, _ := dp.Attributes.Value(amotel.RailAttribute)
						depth[c.AsString()] = r.AsString()
					}
				}
			}
			if depth["Fast"] != "" || depth["Slow"] != "slow" || depth["Gone"] != "ghost" || len(depth) != 3 {
				t.Fatalf("queue.depth rails by consumer: %v", depth)
			}
		})
	}
}
