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
