package natsrelay_test

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"github.com/asyncmonolith/asyncmonolith/natsrelay"
	"github.com/nats-io/nats.go/jetstream"
)

// Stop ends an idle inbox at once, even with a long FetchWait (the fetch waiting for
// messages is cancelled, not waited out), leaves no goroutine behind, and the inbox
// starts again and takes in what arrived meanwhile.
func TestInboxStopIsPromptAndLeavesNoGoroutine(t *testing.T) {
	nc := connect(t)
	js, _ := jetstream.New(nc)
	st, prefix := newStream(t, nc, jetstream.StreamConfig{})
	b := newService(t, testdb.Open(t, "sqlite"), am.Config{})
	applyConsumer(t, b)
	in := newInbox(t, b, nc, natsrelay.InboxConfig{Stream: streamName(t, st), Durable: "life", FetchWait: time.Minute})
	before := runtime.NumGoroutine()
	for round := range 3 {
		if err := in.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := in.Start(context.Background()); !errors.Is(err, natsrelay.ErrAlreadyStarted) {
			t.Fatalf("second Start: %v, want ErrAlreadyStarted", err)
		}
		data, _ := json.Marshal(OrderCancelled{OrderID: round})
		publishRaw(t, js, prefix+".orders", "life-"+string(rune('a'+round)), "OrderCancelled", data)
		waitFor(t, 10*time.Second, func() bool { return in.Stats().Received == int64(round+1) }, "round %d taken in", round)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		err := in.Stop(ctx)
		cancel()
		if err != nil {
			t.Fatalf("round %d: Stop of an inbox idle in a 1m fetch: %v after %v, want it to end at once", round, err, time.Since(start))
		}
		if err := in.Stop(context.Background()); !errors.Is(err, natsrelay.ErrNotStarted) {
			t.Fatalf("second Stop: %v, want ErrNotStarted", err)
		}
	}
	// A handle used after Stop: Fetch still works, and an idle one ends after FetchWait
	// (the ctx deadline here) with nothing fetched and no error.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if n, err := in.Fetch(ctx); n != 0 || (err != nil && !errors.Is(err, context.DeadlineExceeded)) {
		t.Fatalf("idle Fetch after Stop: %d, %v", n, err)
	}
	data, _ := json.Marshal(OrderCancelled{OrderID: 9})
	publishRaw(t, js, prefix+".orders", "life-after", "OrderCancelled", data)
	if n, err := in.Fetch(context.Background()); n != 1 || err != nil {
		t.Fatalf("Fetch after Stop: %d, %v, want the 1 message published", n, err)
	}
	// Started with a ctx that ends: it stops by itself and can be started again.
	ended, end := context.WithCancel(context.Background())
	if err := in.Start(ended); err != nil {
		t.Fatal(err)
	}
	end()
	waitFor(t, 10*time.Second, func() bool { return in.Start(context.Background()) == nil }, "Start again after its ctx ended")
	if err := in.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return runtime.NumGoroutine() <= before },
		"goroutines back to %d after Stop", before)
}

// A relay leaves no goroutine behind once its plugin stopped and it is closed, on a
// connection that stays open; a relay used after Close works again.
func TestRelayCloseLeavesNoGoroutine(t *testing.T) {
	nc := connect(t)
	st, prefix := newStream(t, nc, jetstream.StreamConfig{})
	a := newService(t, testdb.Open(t, "sqlite"), am.Config{})
	before := runtime.NumGoroutine()
	relay, err := natsrelay.NewRelay(nc, natsrelay.RelayConfig{SubjectPrefix: prefix, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := natsrelay.Forward[OrderCancelled](a.p, relay); err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		if err := a.p.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		a.produce(t, 10*round, 10*round+10, 5)
		waitFor(t, 10*time.Second, func() bool { return relay.Stats().Published == int64(10*round+10) }, "round %d relayed", round)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := a.p.Stop(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		relay.Close()
		waitFor(t, 10*time.Second, func() bool { return runtime.NumGoroutine() <= before },
			"round %d: goroutines back to %d after Stop and Close (now %d)", round, before, runtime.NumGoroutine())
	}
	if info, err := st.Info(context.Background()); err != nil || info.State.Msgs != 20 {
		t.Fatalf("stream: %v, %v; want 20 messages", info, err)
	}
}
