package natsrelay_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"github.com/asyncmonolith/asyncmonolith/natsrelay"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gorm.io/gorm"
)

// A hostile publisher's messages (a payload of NUL bytes or invalid UTF-8, a Nats-Msg-Id
// a database cannot store or an over-long one, a payload-type header cut inside a
// character, a garbage traceparent) are each taken in or poisoned with the reason on the
// first delivery, on every database: none is redelivered for ever, none blocks the rest.
func TestInboxHostileMessages(t *testing.T) {
	for _, dialect := range testdb.Dialects {
		t.Run(dialect, func(t *testing.T) {
			nc := connect(t)
			js, _ := jetstream.New(nc)
			st, prefix := newStream(t, nc, jetstream.StreamConfig{})
			b := newService(t, testdb.Open(t, dialect), am.Config{})
			applyConsumer(t, b)
			in := newInbox(t, b, nc, natsrelay.InboxConfig{Stream: streamName(t, st), Durable: "h", RetryDelay: 20 * time.Millisecond})
			good, _ := json.Marshal(OrderCancelled{OrderID: 1})
			pub := func(id, payloadType string, data []byte, extra ...string) {
				t.Helper()
				m := nats.NewMsg(prefix + ".orders")
				m.Data = data
				if id != "" {
					m.Header.Set(jetstream.MsgIDHeader, id)
				}
				m.Header.Set(natsrelay.HeaderPayloadType, payloadType)
				for i := 0; i+1 < len(extra); i += 2 {
					m.Header.Set(extra[i], extra[i+1])
				}
				if _, err := js.PublishMsg(t.Context(), m); err != nil {
					t.Fatal(err)
				}
			}
			pub("nul-payload", "OrderCancelled", []byte("{\x00\x00}"))
			pub("utf8-payload", "OrderCancelled", []byte("\xff\xfe{"))
			pub("long-type", strings.Repeat("é", 200), []byte(`{}`))
			pub("bad-id-\xff", "OrderCancelled", good)
			pub("nul-id-\x00", "OrderCancelled", []byte(`{"order_id": 2}`))
			pub("", "OrderCancelled", []byte(`{"order_id": 3}`))
			pub("trace", "OrderCancelled", []byte(`{"order_id": 4}`), natsrelay.HeaderTraceParent, "00-zz-\xff-01")
			pub(strings.Repeat("i", 300), "OrderCancelled", []byte(`{"order_id": 5}`))
			b.start(t)
			startInbox(t, in)
			waitFor(t, 20*time.Second, func() bool { s := in.Stats(); return s.Received+s.Poisoned == 8 },
				"every hostile message taken in or poisoned (stats %+v)", in.Stats())
			if s := in.Stats(); s.Received != 5 || s.Poisoned != 3 || s.Failed != 0 {
				t.Fatalf("stats %+v, want 5 received, 3 poisoned, no failed write", s)
			}
			waitFor(t, 10*time.Second, func() bool { rows, _ := applied(t, b); return rows == 5 }, "the 5 good orders applied")
			var poisoned []am.PoisonedMessage
			if err := b.db.Order("insert_id").Find(&poisoned).Error; err != nil {
				t.Fatal(err)
			}
			if len(poisoned) != 3 {
				t.Fatalf("%d poisoned rows, want 3", len(poisoned))
			}
			for _, p := range poisoned {
				if !utf8.ValidString(p.PayloadType) || p.LastError == "" {
					t.Errorf("poisoned %q: payload type %q, reason %q", p.InsertID, p.PayloadType, p.LastError)
				}
			}
			if p := poisoned[2]; p.InsertID != "utf8-payload" || !strings.Contains(p.LastError, "base64") {
				t.Errorf("invalid UTF-8 payload poisoned as %+v, want its reason to say the payload is kept in base64", p)
			}
		})
	}
}

// A payload string holding NUL bytes and invalid UTF-8 goes from a PostgreSQL outbox
// through the relay and the inbox into another PostgreSQL database (which refuses NUL in
// text): the NUL bytes arrive intact, the invalid byte as U+FFFD (what encoding/json makes
// of it when the message is produced).
func TestRelayAndInboxCarryNULOnPostgres(t *testing.T) {
	nc := connect(t)
	st, prefix := newStream(t, nc, jetstream.StreamConfig{})
	a := newService(t, testdb.Open(t, "postgres"), am.Config{})
	relay, err := natsrelay.NewRelay(nc, natsrelay.RelayConfig{SubjectPrefix: prefix, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := natsrelay.Forward[OrderCancelled](a.p, relay); err != nil {
		t.Fatal(err)
	}
	b := newService(t, testdb.Open(t, "postgres"), am.Config{})
	got := make(chan string, 1)
	if err := am.Register[OrderCancelled](b.p, am.ConsumerFunc[OrderCancelled](func(_ context.Context, m *am.Message[OrderCancelled]) error {
		got <- m.Payload.Reason
		return nil
	}), am.WithName("Record")); err != nil {
		t.Fatal(err)
	}
	in := newInbox(t, b, nc, natsrelay.InboxConfig{Stream: streamName(t, st), Durable: "nul"})
	if err := a.db.Transaction(func(tx *gorm.DB) error {
		return am.ProduceTx(t.Context(), tx, OrderCancelled{OrderID: 1, Reason: "a\x00b\xffc"})
	}); err != nil {
		t.Fatalf("produce a payload with NUL on PostgreSQL: %v", err)
	}
	a.start(t)
	b.start(t)
	startInbox(t, in)
	select {
	case r := <-got:
		if r != "a\x00b\uFFFDc" {
			t.Fatalf("received reason %q, want %q", r, "a\x00b\uFFFDc")
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the message did not arrive; relay %+v, inbox %+v", relay.Stats(), in.Stats())
	}
}

// A RelayConfig.Subject function that panics on one message poisons that message at once
// with the panic as its reason: it is not retried a thousand times, and the relay is not
// paused for the messages around it.
func TestRelaySubjectPanicPoisonsTheMessage(t *testing.T) {
	nc := connect(t)
	st, prefix := newStream(t, nc, jetstream.StreamConfig{})
	a := newService(t, testdb.Open(t, "sqlite"), am.Config{BreakerFailures: 2})
	relay, err := natsrelay.NewRelay(nc, natsrelay.RelayConfig{Logger: quietLogger(), Subject: func(m natsrelay.Outgoing) string {
		var oc OrderCancelled
		_ = json.Unmarshal(m.Data, &oc)
		if oc.Reason == "panic" {
			return strings.Split(m.PayloadType, "/")[1] // the kind of bug a subject function has
		}
		return prefix + ".orders"
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := natsrelay.Forward[OrderCancelled](a.p, relay); err != nil {
		t.Fatal(err)
	}
	a.produceReasons(t, "ok", "panic", "ok", "panic", "ok")
	a.start(t)
	waitFor(t, 20*time.Second, func() bool { return a.count(t, &am.ConsumerMessage{}) == 0 }, "every message relayed or poisoned")
	poisoned, err := a.p.ListPoisoned(t.Context(), am.MessageFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(poisoned) != 2 {
		t.Fatalf("%d poisoned, want the 2 whose subject panicked", len(poisoned))
	}
	for _, p := range poisoned {
		if p.Attempts != 1 || !strings.Contains(p.LastError, "index out of range") {
			t.Errorf("poisoned after %d attempts with %q, want 1 attempt and the panic", p.Attempts, p.LastError)
		}
	}
	if info, err := st.Info(t.Context()); err != nil || info.State.Msgs != 3 {
		t.Fatalf("stream: %v; want the 3 good messages", err)
	}
}

// OrderCancelledV2 claims the stored name of OrderCancelled, which the receiver has
// registered under that other Go type.
type OrderCancelledV2 struct {
	OrderID int `json:"order_id"`
}

// PayloadType is "OrderCancelled".
func (OrderCancelledV2) PayloadType() string { return "OrderCancelled" }

// An inbox that accepts a payload type under one Go type while the receiver's consumers
// have it under another poisons the message on its first delivery with the core's
// reason (ErrInvalidName: the consumers would decode it into the other type), rather
// than failing it MaxDeliveries times.
func TestInboxPayloadTypeUnderAnotherGoType(t *testing.T) {
	nc := connect(t)
	js, _ := jetstream.New(nc)
	st, prefix := newStream(t, nc, jetstream.StreamConfig{})
	b := newService(t, testdb.Open(t, "sqlite"), am.Config{})
	applyConsumer(t, b) // registers OrderCancelled
	in, err := natsrelay.NewInbox(t.Context(), b.db, nc, natsrelay.InboxConfig{Stream: streamName(t, st), Durable: "v2", Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := natsrelay.Accept[OrderCancelledV2](in); err != nil {
		t.Fatal(err)
	}
	publishRaw(t, js, prefix+".orders", "v2-1", "OrderCancelled", []byte(`{"order_id": 1}`))
	startInbox(t, in)
	waitFor(t, 10*time.Second, func() bool { return in.Stats().Poisoned == 1 }, "the message poisoned")
	var p am.PoisonedMessage
	if err := b.db.First(&p).Error; err != nil || !strings.Contains(p.LastError, "is the name of") {
		t.Fatalf("poisoned %+v (%v), want the core's reason", p, err)
	}
	if s := in.Stats(); s.Failed != 0 {
		t.Fatalf("stats %+v: the message was retried", s)
	}
}

// A subject function that lets payload data reach the subject cannot turn a message into
// a JetStream API call (here: purge the stream) or a system request: subjects under $JS.,
// $SYS. and _INBOX. are invalid, and the message is poisoned.
func TestRelayRefusesAPISubjects(t *testing.T) {
	nc := connect(t)
	st, prefix := newStream(t, nc, jetstream.StreamConfig{})
	name := streamName(t, st)
	a := newService(t, testdb.Open(t, "sqlite"), am.Config{})
	relay, err := natsrelay.NewRelay(nc, natsrelay.RelayConfig{Logger: quietLogger(), Subject: func(m natsrelay.Outgoing) string {
		var oc OrderCancelled
		_ = json.Unmarshal(m.Data, &oc)
		if oc.Reason != "ok" {
			return oc.Reason // tenant-chosen routing: the bug that lets a payload pick the subject
		}
		return prefix + ".orders"
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := natsrelay.Forward[OrderCancelled](a.p, relay); err != nil {
		t.Fatal(err)
	}
	a.produceReasons(t, "ok", "ok")
	a.start(t)
	waitFor(t, 10*time.Second, func() bool { return a.count(t, &am.ConsumerMessage{}) == 0 }, "the first 2 relayed")
	a.produceReasons(t, "$JS.API.STREAM.PURGE."+name, "$SYS.REQ.SERVER.PING", "_INBOX.x")
	waitFor(t, 10*time.Second, func() bool { return a.count(t, &am.ConsumerMessage{}) == 0 }, "the hostile ones settled")
	if info, err := st.Info(t.Context()); err != nil || info.State.Msgs != 2 {
		t.Fatalf("stream after hostile subjects: %+v, %v; want its 2 messages kept", info.State, err)
	}
	poisoned, err := a.p.ListPoisoned(t.Context(), am.MessageFilter{})
	if err != nil || len(poisoned) != 3 {
		t.Fatalf("%d poisoned (%v), want the 3 hostile subjects", len(poisoned), err)
	}
	for _, p := range poisoned {
		if !strings.Contains(p.LastError, "reserved") {
			t.Errorf("poisoned with %q, want the reserved-subject reason", p.LastError)
		}
	}
}

// A subject that a plain NATS service answers (no stream captures it) poisons the
// message at once, rather than handing it to that service on every retry.
func TestRelaySubjectAnsweredByAService(t *testing.T) {
	nc := connect(t)
	_, prefix := newStream(t, nc, jetstream.StreamConfig{})
	var calls atomic.Int32
	sub, err := nc.Subscribe("svc"+prefix+".orders", func(m *nats.Msg) { calls.Add(1); _ = m.Respond([]byte("pong")) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	a := newService(t, testdb.Open(t, "sqlite"), am.Config{})
	relay, err := natsrelay.NewRelay(nc, natsrelay.RelayConfig{SubjectPrefix: "svc" + prefix, Logger: quietLogger(),
		Subject: func(natsrelay.Outgoing) string { return "svc" + prefix + ".orders" }})
	if err != nil {
		t.Fatal(err)
	}
	if err := natsrelay.Forward[OrderCancelled](a.p, relay); err != nil {
		t.Fatal(err)
	}
	a.produceReasons(t, "x")
	a.start(t)
	waitFor(t, 10*time.Second, func() bool { return a.count(t, &am.ConsumerMessage{}) == 0 }, "the message settled")
	poisoned, err := a.p.ListPoisoned(t.Context(), am.MessageFilter{})
	if err != nil || len(poisoned) != 1 || poisoned[0].Attempts != 1 || !strings.Contains(poisoned[0].LastError, "not a JetStream stream") {
		t.Fatalf("poisoned %+v (%v), want 1 on its first attempt with the reason", poisoned, err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("the service got the message %d times, want 1", n)
	}
}
