package natsrelay_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"github.com/asyncmonolith/asyncmonolith/natsrelay"
	"github.com/nats-io/nats.go/jetstream"
)

const traceID, spanID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

// Every message lands in the stream once, on its payload type's subject, with its id in
// Nats-Msg-Id and the payload type, insert id, attempt and trace context as headers; the
// outbox is empty afterwards.
func TestRelayPublishesWithHeaders(t *testing.T) {
	nc := connect(t)
	st, prefix := newStream(t, nc, jetstream.StreamConfig{})
	a := newService(t, testdb.Open(t, "sqlite"), am.Config{Hooks: am.Hooks{
		TraceContext: func(context.Context) (string, string) { return traceID, spanID }}})
	relay, err := natsrelay.NewRelay(nc, natsrelay.RelayConfig{SubjectPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	if err := natsrelay.Forward[OrderCancelled](a.p, relay); err != nil {
		t.Fatal(err)
	}
	const n = 250
	a.produce(t, 0, n, 50)
	var ids []am.ConsumerMessage
	if err := a.db.Order("id").Find(&ids).Error; err != nil {
		t.Fatal(err)
	}
	want := map[string]am.ConsumerMessage{}
	for _, r := range ids {
		want[r.ID] = r
	}
	a.start(t)
	waitFor(t, 20*time.Second, func() bool { return a.count(t, &am.ConsumerMessage{}) == 0 }, "the outbox to empty")
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n {
		t.Fatalf("stream holds %d messages, want %d", info.State.Msgs, n)
	}
	seenOrders := map[int]bool{}
	for seq := uint64(1); seq <= n; seq++ {
		m, err := st.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		id := m.Header.Get(jetstream.MsgIDHeader)
		row, ok := want[id]
		if !ok {
			t.Fatalf("message %d: Nats-Msg-Id %q is not a produced message id", seq, id)
		}
		delete(want, id)
		if m.Subject != prefix+".OrderCancelled" {
			t.Fatalf("subject %q, want %s.OrderCancelled", m.Subject, prefix)
		}
		if got := m.Header.Get(natsrelay.HeaderPayloadType); got != "OrderCancelled" {
			t.Fatalf("payload type header %q", got)
		}
		if got := m.Header.Get(natsrelay.HeaderInsertID); got != row.InsertID {
			t.Fatalf("insert id header %q, want %q", got, row.InsertID)
		}
		if got := m.Header.Get(natsrelay.HeaderAttempt); got != "1" {
			t.Fatalf("attempt header %q, want 1", got)
		}
		if got := m.Header.Get(natsrelay.HeaderCreatedAt); got != strconv.FormatInt(row.CreatedAt, 10) {
			t.Fatalf("created-at header %q, want %d", got, row.CreatedAt)
		}
		if got := m.Header.Get(natsrelay.HeaderTraceParent); got != "00-"+traceID+"-"+spanID+"-01" {
			t.Fatalf("traceparent %q", got)
		}
		var oc OrderCancelled
		if err := json.Unmarshal(m.Data, &oc); err != nil || oc.Reason != "customer" {
			t.Fatalf("payload %s: %v", m.Data, err)
		}
		seenOrders[oc.OrderID] = true
	}
	if len(want) != 0 || len(seenOrders) != n {
		t.Fatalf("%d produced messages missing from the stream, %d distinct orders in it", len(want), len(seenOrders))
	}
	if s := relay.Stats(); s.Published != n || s.Duplicates != 0 || s.Failed != 0 {
		t.Fatalf("stats %+v, want %d published, no duplicates or failures", s, n)
	}
}

// Bad input never sticks the relay: a subject function returning an invalid subject, a
// payload over the server's max payload and a subject no stream captures each poison
// their message at once with the reason, while the messages around them go through and
// the relay is not paused.
func TestRelayBadInputIsPoisonedWithTheReason(t *testing.T) {
	srv := startServer(t, "max_payload: 65536")
	nc := connectTo(t, srv.url())
	st, prefix := newStream(t, nc, jetstream.StreamConfig{})
	a := newService(t, testdb.Open(t, "sqlite"), am.Config{BreakerFailures: 2})
	relay, err := natsrelay.NewRelay(nc, natsrelay.RelayConfig{PublishTimeout: 2 * time.Second, Subject: func(m natsrelay.Outgoing) string {
		var oc OrderCancelled
		_ = json.Unmarshal(m.Data, &oc)
		switch oc.Reason {
		case "bad-subject":
			return prefix + ".orders cancelled" // a space: NATS would read two tokens
		case "wildcard":
			return prefix + ".*"
		case "no-stream":
			return "nostream" + prefix + ".x"
		}
		return prefix + ".orders"
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := natsrelay.Forward[OrderCancelled](a.p, relay); err != nil {
		t.Fatal(err)
	}
	huge := strings.Repeat("x", 70_000)
	reasons := []string{"ok", "bad-subject", "ok", huge, "wildcard", "no-stream", "ok", "bad-subject", "ok"}
	a.produceReasons(t, reasons...)
	a.start(t)
	waitFor(t, 20*time.Second, func() bool { return a.count(t, &am.ConsumerMessage{}) == 0 }, "every message relayed or poisoned")
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 4 {
		t.Fatalf("stream holds %d messages, want the 4 good ones", info.State.Msgs)
	}
	poisoned, err := a.p.ListPoisoned(context.Background(), am.MessageFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(poisoned) != 5 {
		t.Fatalf("%d poisoned, want 5", len(poisoned))
	}
	wantReason := map[string]string{"bad-subject": "whitespace", "wildcard": "wildcard token", "no-stream": "no stream captures", huge: "max payload"}
	for _, p := range poisoned {
		var oc OrderCancelled
		_ = json.Unmarshal([]byte(p.Payload), &oc)
		if p.Attempts != 1 || !strings.Contains(p.LastError, wantReason[oc.Reason]) {
			t.Errorf("order %d poisoned after %d attempts: %q; want 1 attempt and a reason with %q", oc.OrderID, p.Attempts, p.LastError, wantReason[oc.Reason])
		}
	}
	if paused := a.p.Paused(); len(paused) != 0 {
		t.Fatalf("relay paused %v by bad input", paused)
	}
	if s := relay.Stats(); s.Failed != 5 || s.Published != 4 {
		t.Fatalf("stats %+v, want 4 published and 5 failed", s)
	}
}

// A JetStream that is down makes messages retry, not poison: the breaker pauses the relay,
// and once the server is back everything arrives, once.
func TestRelayJetStreamDownRetriesAndPauses(t *testing.T) {
	srv := startServer(t)
	nc := connectTo(t, srv.url())
	st, prefix := newStream(t, nc, jetstream.StreamConfig{})
	a := newService(t, testdb.Open(t, "sqlite"), am.Config{BreakerFailures: 3, BreakerCooldown: 300 * time.Millisecond,
		BreakerMaxCooldown: 600 * time.Millisecond, AttemptDelay: 100 * time.Millisecond})
	relay, err := natsrelay.NewRelay(nc, natsrelay.RelayConfig{SubjectPrefix: prefix, PublishTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := natsrelay.Forward[OrderCancelled](a.p, relay); err != nil {
		t.Fatal(err)
	}
	a.produce(t, 0, 100, 100)
	a.start(t)
	waitFor(t, 20*time.Second, func() bool { return a.count(t, &am.ConsumerMessage{}) == 0 }, "the first 100 relayed")
	srv.stop()
	a.produce(t, 100, 300, 50)
	waitFor(t, 20*time.Second, func() bool { return len(a.p.Paused()) == 1 }, "the relay paused by its breaker while JetStream is down")
	if n := a.count(t, &am.PoisonedMessage{}); n != 0 {
		t.Fatalf("%d messages poisoned while JetStream was down", n)
	}
	srv.start()
	waitFor(t, 30*time.Second, func() bool { return a.count(t, &am.ConsumerMessage{}) == 0 }, "the backlog relayed after the restart")
	if n := a.count(t, &am.PoisonedMessage{}); n != 0 {
		t.Fatalf("%d messages poisoned", n)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 300 {
		t.Fatalf("stream holds %d messages, want 300", info.State.Msgs)
	}
	if s := relay.Stats(); s.Failed == 0 {
		t.Fatalf("stats %+v: no failed publish while the server was down", s)
	} else {
		t.Logf("relay stats: %+v", s)
	}
}
