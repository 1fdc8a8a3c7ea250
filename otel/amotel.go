// Package amotel connects asyncmonolith to OpenTelemetry: the producer records the caller's
// trace context on every message, each consumer run is a span that continues that trace
// (across processes and retries), and counters, a duration histogram and queue gauges
// follow the OpenTelemetry messaging conventions.
//
//	inst, err := amotel.New() // global providers; or WithTracerProvider, WithMeterProvider
//	p := asyncmonolith.New(asyncmonolith.Config{Hooks: inst.Hooks()})
//	reg, err := inst.ObserveQueue(p) // queue depth and oldest due age, per consumer and per rail
//
// It lives in its own module so that the core does not depend on OpenTelemetry.
package amotel

import (
	"context"
	"errors"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of the tracer and the meter.
const ScopeName = "github.com/asyncmonolith/asyncmonolith/otel"

// System is the messaging.system attribute value.
const System = "asyncmonolith"

// RailAttribute is the attribute naming a message's rail on the queue gauges; the default
// rail (asyncmonolith.DefaultRail) is "".
const RailAttribute = "asyncmonolith.rail"

// Option configures New.
type Option func(*options)

type options struct {
	tp trace.TracerProvider
	mp metric.MeterProvider
}

// WithTracerProvider sets the tracer provider (default: otel.GetTracerProvider()).
func WithTracerProvider(tp trace.TracerProvider) Option { return func(o *options) { o.tp = tp } }

// WithMeterProvider sets the meter provider (default: otel.GetMeterProvider()).
func WithMeterProvider(mp metric.MeterProvider) Option { return func(o *options) { o.mp = mp } }

// Instrumentation holds the tracer and the instruments.
type Instrumentation struct {
	tracer   trace.Tracer
	meter    metric.Meter
	produced metric.Int64Counter
	consumed metric.Int64Counter
	failed   metric.Int64Counter
	snoozed  metric.Int64Counter
	poisoned metric.Int64Counter
	fired    metric.Int64Counter
	skipped  metric.Int64Counter
	duration metric.Float64Histogram
}

// New creates the tracer and instruments.
func New(opts ...Option) (*Instrumentation, error) {
	o := options{tp: otel.GetTracerProvider(), mp: otel.GetMeterProvider()}
	for _, opt := range opts {
		opt(&o)
	}
	i := &Instrumentation{tracer: o.tp.Tracer(ScopeName), meter: o.mp.Meter(ScopeName)}
	var errs [8]error
	i.produced, errs[0] = i.meter.Int64Counter("asyncmonolith.messages.produced", metric.WithDescription("Messages written, by payload type."), metric.WithUnit("{message}"))
	i.consumed, errs[1] = i.meter.Int64Counter("asyncmonolith.messages.consumed", metric.WithDescription("Consumer runs that succeeded, by consumer."), metric.WithUnit("{message}"))
	i.failed, errs[2] = i.meter.Int64Counter("asyncmonolith.messages.failed", metric.WithDescription("Consumer runs that failed (retried or poisoned), by consumer."), metric.WithUnit("{message}"))
	i.poisoned, errs[3] = i.meter.Int64Counter("asyncmonolith.messages.poisoned", metric.WithDescription("Messages moved to poisoned_messages, by consumer."), metric.WithUnit("{message}"))
	i.fired, errs[4] = i.meter.Int64Counter("asyncmonolith.schedules.fired", metric.WithDescription("Schedule firings, by payload type."), metric.WithUnit("{firing}"))
	i.duration, errs[5] = i.meter.Float64Histogram("asyncmonolith.consume.duration", metric.WithDescription("Duration of consumer runs."), metric.WithUnit("s"))
	i.skipped, errs[6] = i.meter.Int64Counter("asyncmonolith.schedules.skipped", metric.WithDescription("Due schedules skipped as broken (expression or zone no longer parses, or no consumer in this process), by payload type."), metric.WithUnit("{firing}"))
	i.snoozed, errs[7] = i.meter.Int64Counter("asyncmonolith.messages.snoozed", metric.WithDescription("Consumer runs that snoozed their message (asyncmonolith.SnoozeFor): due again later without an attempt used, by consumer."), metric.WithUnit("{message}"))
	if err := errors.Join(errs[:]...); err != nil {
		return nil, err
	}
	return i, nil
}

// Hooks returns the hooks to set as asyncmonolith.Config.Hooks.
func (i *Instrumentation) Hooks() am.Hooks {
	return am.Hooks{
		TraceContext:    i.traceContext,
		Produced:        i.onProduced,
		BeforeConsume:   i.beforeConsume,
		AfterConsume:    i.afterConsume,
		ScheduleFired:   i.onFired,
		ScheduleSkipped: i.onSkipped,
	}
}

func (i *Instrumentation) traceContext(ctx context.Context) (string, string) {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return "", ""
	}
	return sc.TraceID().String(), sc.SpanID().String()
}

func (i *Instrumentation) onProduced(ctx context.Context, rows []am.ConsumerMessage) {
	counts := map[string]int64{}
	for _, r := range rows {
		counts[r.PayloadType]++
	}
	for pt, n := range counts {
		i.produced.Add(ctx, n, metric.WithAttributes(attribute.String("messaging.system", System), attribute.String("asyncmonolith.payload_type", pt)))
	}
}

func (i *Instrumentation) beforeConsume(ctx context.Context, m am.MessageInfo) context.Context {
	if tid, err := trace.TraceIDFromHex(m.TraceID); err == nil {
		if sid, err := trace.SpanIDFromHex(m.SpanID); err == nil {
			parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
			ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
		}
	}
	ctx, _ = i.tracer.Start(ctx, "process "+m.ConsumerType,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", System),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.operation.name", "process"),
			attribute.String("messaging.destination.name", m.ConsumerType),
			attribute.String("messaging.message.id", m.ID),
			attribute.String("messaging.message.conversation_id", m.InsertID),
			attribute.String("asyncmonolith.payload_type", m.PayloadType),
			attribute.Int("asyncmonolith.attempt", m.Attempt),
			attribute.Int("asyncmonolith.max_attempts", m.MaxAttempts),
		))
	return ctx
}

func (i *Instrumentation) afterConsume(ctx context.Context, m am.MessageInfo, r am.Result) {
	span := trace.SpanFromContext(ctx)
	attrs := metric.WithAttributes(attribute.String("messaging.system", System), attribute.String("messaging.destination.name", m.ConsumerType))
	i.duration.Record(ctx, r.Duration.Seconds(), attrs)
	switch {
	case r.Err == nil:
		i.consumed.Add(ctx, 1, attrs)
		span.SetStatus(codes.Ok, "")
	case r.Snoozed: // neither a success nor a failure
		i.snoozed.Add(ctx, 1, attrs)
		span.SetAttributes(attribute.Bool("asyncmonolith.snoozed", true),
			attribute.String("asyncmonolith.retry_at", r.RetryAt.UTC().Format(time.RFC3339Nano)))
	default:
		i.failed.Add(ctx, 1, attrs)
		span.RecordError(r.Err)
		span.SetStatus(codes.Error, r.Err.Error())
		if r.Poisoned {
			i.poisoned.Add(ctx, 1, attrs)
			span.SetAttributes(attribute.Bool("asyncmonolith.poisoned", true))
		} else if !r.RetryAt.IsZero() {
			span.SetAttributes(attribute.String("asyncmonolith.retry_at", r.RetryAt.UTC().Format(time.RFC3339Nano)))
		}
	}
	span.End()
}

func (i *Instrumentation) onFired(ctx context.Context, scheduleID, payloadType string) {
	i.fired.Add(ctx, 1, metric.WithAttributes(attribute.String("messaging.system", System), attribute.String("asyncmonolith.payload_type", payloadType)))
}

func (i *Instrumentation) onSkipped(ctx context.Context, scheduleID, payloadType string, _ error) {
	i.skipped.Add(ctx, 1, metric.WithAttributes(attribute.String("messaging.system", System), attribute.String("asyncmonolith.payload_type", payloadType)))
}

// ObserveQueue registers gauges of the queue depth and of the age of the oldest due
// message, per consumer type and rail (RailAttribute), and the asyncmonolith.rail.* gauges
// per rail (every rail p runs, empty ones included, and any other rail holding messages),
// read with one p.Stats at each collection (bounded by a 5 s timeout). Unregister the
// returned registration when done.
func (i *Instrumentation) ObserveQueue(p *am.Plugin) (metric.Registration, error) {
	rails, err := i.railGauges()
	if err != nil {
		return nil, err
	}
	depth, err := i.meter.Int64ObservableGauge("asyncmonolith.queue.depth", metric.WithDescription("Pending messages, by consumer."), metric.WithUnit("{message}"))
	if err != nil {
		return nil, err
	}
	due, err := i.meter.Int64ObservableGauge("asyncmonolith.queue.due", metric.WithDescription("Pending messages that are due, by consumer."), metric.WithUnit("{message}"))
	if err != nil {
		return nil, err
	}
	age, err := i.meter.Float64ObservableGauge("asyncmonolith.queue.oldest_due_age", metric.WithDescription("Age of the oldest due message, by consumer."), metric.WithUnit("s"))
	if err != nil {
		return nil, err
	}
	poisoned, err := i.meter.Int64ObservableGauge("asyncmonolith.poisoned.depth", metric.WithDescription("Poisoned messages, by consumer."), metric.WithUnit("{message}"))
	if err != nil {
		return nil, err
	}
	paused, err := i.meter.Int64ObservableGauge("asyncmonolith.consumer.paused", metric.WithDescription("1 for each consumer this process has paused because it kept failing (its breaker is open)."), metric.WithUnit("{consumer}"))
	if err != nil {
		return nil, err
	}
	conflicts, err := i.meter.Int64ObservableCounter("asyncmonolith.batches.conflicts", metric.WithDescription("Batches rolled back by a deadlock, lock wait timeout or serialization failure, and retried."), metric.WithUnit("{batch}"))
	if err != nil {
		return nil, err
	}
	setAside, err := i.meter.Int64ObservableCounter("asyncmonolith.messages.set_aside", metric.WithDescription("Messages set aside, without an attempt, because their consumer was paused."), metric.WithUnit("{message}"))
	if err != nil {
		return nil, err
	}
	batchErrors, err := i.meter.Int64ObservableCounter("asyncmonolith.batches.errors", metric.WithDescription("Claims that failed other than by a transient conflict (a lost connection)."), metric.WithUnit("{batch}"))
	if err != nil {
		return nil, err
	}
	leaseLost, err := i.meter.Int64ObservableCounter("asyncmonolith.messages.lease_lost", metric.WithDescription("Runs whose completion was refused because their message's lease had ended and another processor had claimed it; their Message.Tx writes were rolled back."), metric.WithUnit("{message}"))
	if err != nil {
		return nil, err
	}
	released, err := i.meter.Int64ObservableCounter("asyncmonolith.messages.released", metric.WithDescription("Runs cut short by a hard stop, a lost connection under Message.Tx or a wait for a Message.Tx slot: their messages are due again without an attempt counted."), metric.WithUnit("{message}"))
	if err != nil {
		return nil, err
	}
	return i.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		system := metric.WithAttributes(attribute.String("messaging.system", System))
		c := p.Counters()
		o.ObserveInt64(conflicts, int64(c.Conflicts), system)
		o.ObserveInt64(setAside, int64(c.SetAside), system)
		o.ObserveInt64(batchErrors, int64(c.BatchErrors), system)
		o.ObserveInt64(leaseLost, int64(c.LeaseLost), system)
		o.ObserveInt64(released, int64(c.Released), system)
		for name := range p.Paused() {
			o.ObserveInt64(paused, 1, metric.WithAttributes(attribute.String("messaging.system", System), attribute.String("messaging.destination.name", name)))
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		stats, err := p.Stats(ctx)
		if err != nil {
			return err
		}
		for _, s := range stats {
			// The rail keeps apart the series of a consumer that moved rails while some of
			// its messages were stored (Stats has one entry per consumer and rail).
			attrs := metric.WithAttributes(attribute.String("messaging.system", System), attribute.String("messaging.destination.name", s.ConsumerType), attribute.String(RailAttribute, s.Rail))
			o.ObserveInt64(depth, s.Pending, attrs)
			o.ObserveInt64(due, s.Due, attrs)
			o.ObserveFloat64(age, s.OldestDueAge.Seconds(), attrs)
			o.ObserveInt64(poisoned, s.Poisoned, attrs)
		}
		rails.observe(o, p.SumByRail(stats))
		return nil
	}, append(rails.instruments(), depth, due, age, poisoned, paused, conflicts, setAside, batchErrors, leaseLost, released)...)
}

// railGauges are the per-rail gauges of ObserveQueue.
type railGauges struct {
	pending, running, due, poisoned metric.Int64ObservableGauge
	age                             metric.Float64ObservableGauge
}

func (i *Instrumentation) railGauges() (railGauges, error) {
	var g railGauges
	var errs [5]error
	unit := metric.WithUnit("{message}")
	g.pending, errs[0] = i.meter.Int64ObservableGauge("asyncmonolith.rail.pending", metric.WithDescription("Pending messages (waiting or running), by rail."), unit)
	g.running, errs[1] = i.meter.Int64ObservableGauge("asyncmonolith.rail.running", metric.WithDescription("Messages claimed by a processor, by rail."), unit)
	g.due, errs[2] = i.meter.Int64ObservableGauge("asyncmonolith.rail.due", metric.WithDescription("Pending messages that are due, by rail: a rail whose due count grows has too few processors or slots for its consumers."), unit)
	g.age, errs[3] = i.meter.Float64ObservableGauge("asyncmonolith.rail.oldest_due_age", metric.WithDescription("Age of the oldest due message, by rail."), metric.WithUnit("s"))
	g.poisoned, errs[4] = i.meter.Int64ObservableGauge("asyncmonolith.rail.poisoned", metric.WithDescription("Poisoned messages, by the rail they were poisoned on."), unit)
	return g, errors.Join(errs[:]...)
}

func (g railGauges) instruments() []metric.Observable {
	return []metric.Observable{g.pending, g.running, g.due, g.age, g.poisoned}
}

func (g railGauges) observe(o metric.Observer, rails []am.RailStats) {
	for _, r := range rails {
		attrs := metric.WithAttributes(attribute.String("messaging.system", System), attribute.String(RailAttribute, r.Rail))
		o.ObserveInt64(g.pending, r.Pending, attrs)
		o.ObserveInt64(g.running, r.Running, attrs)
		o.ObserveInt64(g.due, r.Due, attrs)
		o.ObserveFloat64(g.age, r.OldestDueAge.Seconds(), attrs)
		o.ObserveInt64(g.poisoned, r.Poisoned, attrs)
	}
}
