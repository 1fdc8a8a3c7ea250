package natsrelay_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"github.com/asyncmonolith/asyncmonolith/natsrelay"
	"github.com/nats-io/nats.go/jetstream"
)

// 10,000 messages produced in service A's transactions arrive exactly once in service
// B's consumer table, through the relay, JetStream and the inbox.
func TestExactlyOnceAcrossServices(t *testing.T) {
	for _, pair := range [][2]string{{"postgres", "sqlite"}, {"mysql", "postgres"}} {
		t.Run(pair[0]+"_to_"+pair[1], func(t *testing.T) {
			nc := connect(t)
			st, prefix := newStream(t, nc, jetstream.StreamConfig{})
			a := newService(t, testdb.Open(t, pair[0]), am.Config{})
			b := newService(t, testdb.Open(t, pair[1]), am.Config{})
			relay, err := natsrelay.NewRelay(nc, natsrelay.RelayConfig{SubjectPrefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			if err := natsrelay.Forward[OrderCancelled](a.p, relay); err != nil {
				t.Fatal(err)
			}
			applyConsumer(t, b)
			in := newInbox(t, b, nc, natsrelay.InboxConfig{Stream: streamName(t, st), Durable: "b"})
			const n = 10_000
			start := time.Now()
			a.start(t)
			b.start(t)
			startInbox(t, in)
			a.produce(t, 0, n, 100)
			produced := time.Since(start)
			waitFor(t, 3*time.Minute, func() bool { return in.Stats().Received >= n }, "%d orders taken in by B", n)
			takenIn := time.Since(start)
			waitFor(t, 3*time.Minute, func() bool { rows, _ := applied(t, b); return rows >= n }, "%d orders applied in B", n)
			took := time.Since(start)
			waitFor(t, 20*time.Second, func() bool {
				return a.count(t, &am.ConsumerMessage{}) == 0 && b.count(t, &am.ConsumerMessage{}) == 0
			}, "both queues empty")
			if rows, distinct := applied(t, b); rows != n || distinct != n {
				t.Fatalf("B applied %d rows for %d orders, want %d, each once", rows, distinct, n)
			}
			info, err := st.Info(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if info.State.Msgs != n {
				t.Fatalf("stream holds %d messages, want %d", info.State.Msgs, n)
			}
			if p := a.count(t, &am.PoisonedMessage{}) + b.count(t, &am.PoisonedMessage{}); p != 0 {
				t.Fatalf("%d poisoned", p)
			}
			fmt.Printf("exactly once %s → %s: %d orders produced by %s, taken in by %s, applied once each by %s; relay %+v, inbox %+v\n",
				pair[0], pair[1], n, produced.Round(time.Millisecond), takenIn.Round(time.Millisecond), took.Round(time.Millisecond), relay.Stats(), in.Stats())
		})
	}
}
