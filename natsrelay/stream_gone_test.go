package natsrelay_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"github.com/asyncmonolith/asyncmonolith/natsrelay"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The stream is deleted while the relay runs: the messages produced meanwhile are
// poisoned with ErrNoStream's reason (not retried for ever, not lost), and once the
// stream is created again RequeuePoisoned sends them, each once.
func TestRelayStreamDeletedWhileRunning(t *testing.T) {
	nc := connect(t)
	js, _ := jetstream.New(nc)
	st, prefix := newStream(t, nc, jetstream.StreamConfig{})
	cfg := st.CachedInfo().Config
	a := newService(t, testdb.Open(t, "sqlite"), am.Config{})
	relay, err := natsrelay.NewRelay(nc, natsrelay.RelayConfig{SubjectPrefix: prefix, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := natsrelay.Forward[OrderCancelled](a.p, relay); err != nil {
		t.Fatal(err)
	}
	a.start(t)
	a.produce(t, 0, 20, 10)
	waitFor(t, 10*time.Second, func() bool { return relay.Stats().Published == 20 }, "the first 20 relayed")
	ctx := context.Background()
	if err := js.DeleteStream(ctx, cfg.Name); err != nil {
		t.Fatal(err)
	}
	a.produce(t, 20, 50, 10)
	waitFor(t, 20*time.Second, func() bool { return a.count(t, &am.ConsumerMessage{}) == 0 }, "the 30 produced without a stream settled")
	poisoned, err := a.p.ListPoisoned(ctx, am.MessageFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(poisoned) != 30 {
		t.Fatalf("%d poisoned, want the 30 produced without a stream", len(poisoned))
	}
	ids := make([]string, 0, len(poisoned))
	for _, p := range poisoned {
		if !strings.Contains(p.LastError, "no stream captures") {
			t.Fatalf("poisoned with %q, want ErrNoStream's reason", p.LastError)
		}
		ids = append(ids, p.ID)
	}
	st, err = js.CreateStream(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := a.p.RequeuePoisoned(ctx, ids); err != nil || n != 30 {
		t.Fatalf("requeue: %d, %v", n, err)
	}
	waitFor(t, 20*time.Second, func() bool { return a.count(t, &am.ConsumerMessage{}) == 0 }, "the requeued messages relayed")
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 30 {
		t.Fatalf("the new stream holds %d messages, want the 30 requeued", info.State.Msgs)
	}
	if paused := a.p.Paused(); len(paused) != 0 {
		t.Fatalf("relay paused %v", paused)
	}
}

// Messages without a Nats-Msg-Id are deduplicated by their place in the stream: a stream
// deleted and created again numbers its messages from 1 again, and those are new
// messages, taken in, not dropped as redeliveries of the old stream's.
func TestInboxStreamRecreatedTakesInAnonymousMessages(t *testing.T) {
	nc := connect(t)
	js, _ := jetstream.New(nc)
	st, prefix := newStream(t, nc, jetstream.StreamConfig{})
	cfg := st.CachedInfo().Config
	b := newService(t, testdb.Open(t, "sqlite"), am.Config{})
	applyConsumer(t, b)
	b.start(t)
	ctx := context.Background()
	for round := range 2 {
		in := newInbox(t, b, nc, natsrelay.InboxConfig{Stream: cfg.Name, Durable: "anon"})
		for i := range 3 {
			data, _ := json.Marshal(OrderCancelled{OrderID: 3*round + i})
			m := nats.NewMsg(prefix + ".orders")
			m.Data = data
			m.Header.Set(natsrelay.HeaderPayloadType, "OrderCancelled")
			if _, err := js.PublishMsg(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
		for in.Stats().Received+in.Stats().Duplicates < 3 {
			if _, err := in.Fetch(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if s := in.Stats(); s.Received != 3 {
			t.Fatalf("round %d: stats %+v, want the stream's 3 new messages received", round, s)
		}
		recreateStream(t, js, cfg)
	}
	waitFor(t, 10*time.Second, func() bool { rows, _ := applied(t, b); return rows == 6 }, "the 6 orders applied")
}

// The inbox's stream (and with it its durable) is deleted and created again while the
// inbox runs: it creates its durable again and takes in the new stream's messages.
func TestInboxRecoversItsDurable(t *testing.T) {
	nc := connect(t)
	js, _ := jetstream.New(nc)
	st, prefix := newStream(t, nc, jetstream.StreamConfig{})
	cfg := st.CachedInfo().Config
	b := newService(t, testdb.Open(t, "sqlite"), am.Config{})
	applyConsumer(t, b)
	b.start(t)
	in := newInbox(t, b, nc, natsrelay.InboxConfig{Stream: cfg.Name, Durable: "back", FetchWait: 100 * time.Millisecond})
	startInbox(t, in)
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			data, _ := json.Marshal(OrderCancelled{OrderID: i})
			publishRaw(t, js, prefix+".orders", "back-"+strconv.Itoa(i), "OrderCancelled", data)
		}
	}
	publish(0, 5)
	waitFor(t, 10*time.Second, func() bool { return in.Stats().Received == 5 }, "the first 5 taken in")
	recreateStream(t, js, cfg)
	publish(5, 10)
	waitFor(t, 20*time.Second, func() bool { return in.Stats().Received == 10 }, "the new stream's 5 taken in by the running inbox")
	waitFor(t, 10*time.Second, func() bool { rows, _ := applied(t, b); return rows == 10 }, "the 10 orders applied")
}

// An idle Fetch on an inbox whose stream is gone says so: ErrNoStream, with a readable
// message.
func TestInboxFetchStreamGone(t *testing.T) {
	nc := connect(t)
	js, _ := jetstream.New(nc)
	st, _ := newStream(t, nc, jetstream.StreamConfig{})
	b := newService(t, testdb.Open(t, "sqlite"), am.Config{})
	in := newInbox(t, b, nc, natsrelay.InboxConfig{Stream: streamName(t, st), Durable: "gone", FetchWait: 50 * time.Millisecond})
	if err := js.DeleteStream(t.Context(), streamName(t, st)); err != nil {
		t.Fatal(err)
	}
	n, err := in.Fetch(t.Context())
	if n != 0 || !errors.Is(err, natsrelay.ErrNoStream) || strings.Contains(err.Error(), "%!") {
		t.Fatalf("Fetch from a deleted stream: %d, %v; want ErrNoStream with a readable message", n, err)
	}
}
