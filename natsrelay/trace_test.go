package natsrelay_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"github.com/asyncmonolith/asyncmonolith/natsrelay"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

type traceKey struct{}

// A trace continues across services: A records the producer's trace context, the relay
// sends it as traceparent, the inbox's Extract puts it in the context B produces with,
// and B's consumer sees the same trace id.
func TestTraceContinuesAcrossServices(t *testing.T) {
	nc := connect(t)
	st, prefix := newStream(t, nc, jetstream.StreamConfig{})
	a := newService(t, testdb.Open(t, "sqlite"), am.Config{Hooks: am.Hooks{
		TraceContext: func(context.Context) (string, string) { return traceID, spanID }}})
	b := newService(t, testdb.Open(t, "sqlite"), am.Config{Hooks: am.Hooks{
		TraceContext: func(ctx context.Context) (string, string) {
			tp, _ := ctx.Value(traceKey{}).(string) // 00-<trace>-<span>-01, as Extract stored it
			if parts := strings.Split(tp, "-"); len(parts) == 4 {
				return parts[1], parts[2]
			}
			return "", ""
		}}})
	relay, err := natsrelay.NewRelay(nc, natsrelay.RelayConfig{SubjectPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	if err := natsrelay.Forward[OrderCancelled](a.p, relay); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []string
	if err := am.Register[OrderCancelled](b.p, am.ConsumerFunc[OrderCancelled](func(_ context.Context, m *am.Message[OrderCancelled]) error {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, m.TraceID+"/"+m.SpanID)
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	in := newInbox(t, b, nc, natsrelay.InboxConfig{Stream: streamName(t, st), Durable: "trace",
		Extract: func(ctx context.Context, h nats.Header) context.Context {
			return context.WithValue(ctx, traceKey{}, h.Get(natsrelay.HeaderTraceParent))
		}})
	a.produce(t, 0, 5, 5)
	a.start(t)
	b.start(t)
	startInbox(t, in)
	waitFor(t, 20*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 5 }, "5 messages consumed in B")
	mu.Lock()
	defer mu.Unlock()
	for _, s := range seen {
		if s != traceID+"/"+spanID {
			t.Fatalf("B's consumer saw trace %q, want %s/%s", s, traceID, spanID)
		}
	}
}

// A garbage traceparent from a hostile publisher that makes InboxConfig.Extract panic
// neither crashes the receiver nor loses the message: it is taken in without the trace
// context, and the messages around it keep theirs.
func TestInboxExtractPanicTakesTheMessageIn(t *testing.T) {
	nc := connect(t)
	js, _ := jetstream.New(nc)
	st, prefix := newStream(t, nc, jetstream.StreamConfig{})
	b := newService(t, testdb.Open(t, "postgres"), am.Config{})
	applyConsumer(t, b)
	in := newInbox(t, b, nc, natsrelay.InboxConfig{Stream: streamName(t, st), Durable: "garbage",
		Extract: func(ctx context.Context, h nats.Header) context.Context {
			parts := strings.Split(h.Get(natsrelay.HeaderTraceParent), "-")
			return context.WithValue(ctx, traceKey{}, parts[1]+parts[2]) // panics on a garbage traceparent
		}})
	for i, tp := range []string{"00-" + traceID + "-" + spanID + "-01", "garbage", "00-" + traceID + "-" + spanID + "-01"} {
		m := nats.NewMsg(prefix + ".orders")
		m.Data = []byte(`{"order_id": ` + string(rune('0'+i)) + `}`)
		m.Header.Set(jetstream.MsgIDHeader, "tp-"+string(rune('0'+i)))
		m.Header.Set(natsrelay.HeaderPayloadType, "OrderCancelled")
		m.Header.Set(natsrelay.HeaderTraceParent, tp)
		if _, err := js.PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	b.start(t)
	startInbox(t, in)
	waitFor(t, 20*time.Second, func() bool { return in.Stats().Received == 3 }, "the 3 messages taken in (stats %+v)", in.Stats())
	waitFor(t, 10*time.Second, func() bool { rows, _ := applied(t, b); return rows == 3 }, "the 3 orders applied")
}

// Fragile is a payload whose decoding panics on input it did not expect.
type Fragile struct{ N int }

// UnmarshalJSON panics on anything but an object.
func (f *Fragile) UnmarshalJSON(b []byte) error {
	if b[0] != '{' {
		panic("Fragile: not an object")
	}
	f.N = len(b)
	return nil
}

// A payload that makes its type's UnmarshalJSON panic is poisoned with the panic; the
// receiver keeps running and takes in the next message.
func TestInboxDecodePanicPoisons(t *testing.T) {
	nc := connect(t)
	js, _ := jetstream.New(nc)
	st, prefix := newStream(t, nc, jetstream.StreamConfig{})
	b := newService(t, testdb.Open(t, "sqlite"), am.Config{})
	applyConsumer(t, b)
	if err := am.Register[Fragile](b.p, am.ConsumerFunc[Fragile](func(context.Context, *am.Message[Fragile]) error { return nil })); err != nil {
		t.Fatal(err)
	}
	in := newInbox(t, b, nc, natsrelay.InboxConfig{Stream: streamName(t, st), Durable: "fragile"})
	if err := natsrelay.Accept[Fragile](in); err != nil {
		t.Fatal(err)
	}
	publishRaw(t, js, prefix+".f", "f1", "Fragile", []byte(`[1]`))
	publishRaw(t, js, prefix+".f", "f2", "OrderCancelled", []byte(`{"order_id": 7}`))
	startInbox(t, in)
	waitFor(t, 20*time.Second, func() bool { s := in.Stats(); return s.Received == 1 && s.Poisoned == 1 }, "one taken in, one poisoned")
	var p am.PoisonedMessage
	if err := b.db.First(&p).Error; err != nil || !strings.Contains(p.LastError, "Fragile: not an object") {
		t.Fatalf("poisoned row %+v (%v), want the panic as the reason", p, err)
	}
}
