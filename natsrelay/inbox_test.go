package natsrelay_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"github.com/asyncmonolith/asyncmonolith/natsrelay"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// publishRaw publishes payload to subject as a relay would, with id as Nats-Msg-Id.
func publishRaw(t testing.TB, js jetstream.JetStream, subject, id, payloadType string, data []byte) *jetstream.PubAck {
	t.Helper()
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, id)
	m.Header.Set(natsrelay.HeaderPayloadType, payloadType)
	ack, err := js.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return ack
}

func newInbox(t testing.TB, b *service, nc *nats.Conn, cfg natsrelay.InboxConfig) *natsrelay.Inbox {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	in, err := natsrelay.NewInbox(context.Background(), b.db, nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := natsrelay.Accept[OrderCancelled](in); err != nil {
		t.Fatal(err)
	}
	return in
}

func startInbox(t testing.TB, in *natsrelay.Inbox) {
	t.Helper()
	if err := in.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Stop(context.Background()) })
}

// The inbox writes each message once into the receiver's database, where its consumer
// applies it once: a republish that JetStream stored again (outside its duplicate
// window) is dropped by natsrelay_inbox, and messages it cannot decode, or of a type it
// does not accept, are recorded in poisoned_messages with the reason instead of sticking.
func TestInboxTakesInOnce(t *testing.T) {
	for _, dialect := range testdb.Dialects {
		t.Run(dialect, func(t *testing.T) {
			nc := connect(t)
			js, _ := jetstream.New(nc)
			_, prefix := newStream(t, nc, jetstream.StreamConfig{Duplicates: 100 * time.Millisecond})
			b := newService(t, testdb.Open(t, dialect), am.Config{})
			applyConsumer(t, b)
			in := newInbox(t, b, nc, natsrelay.InboxConfig{Stream: strings.TrimPrefix(prefix, "t"), Durable: "b", FetchBatch: 64})
			const n = 300
			for i := range n {
				data, _ := json.Marshal(OrderCancelled{OrderID: i, Reason: "r"})
				publishRaw(t, js, prefix+".orders", "msg-"+strconv.Itoa(i), "OrderCancelled", data)
			}
			time.Sleep(150 * time.Millisecond) // past the duplicate window: JetStream stores republishes again
			republished := 0
			for i := 0; i < n; i += 10 {
				data, _ := json.Marshal(OrderCancelled{OrderID: i, Reason: "r"})
				if ack := publishRaw(t, js, prefix+".orders", "msg-"+strconv.Itoa(i), "OrderCancelled", data); ack.Duplicate {
					t.Fatal("republish outside the duplicate window was dropped by JetStream; the test needs it stored")
				}
				republished++
			}
			publishRaw(t, js, prefix+".orders", "bad-json", "OrderCancelled", []byte(`{"order_id": "not a number"}`))
			publishRaw(t, js, prefix+".orders", "unknown-type", "InvoicePaid", []byte(`{}`))
			b.start(t)
			startInbox(t, in)
			waitFor(t, 30*time.Second, func() bool {
				rows, _ := applied(t, b)
				s := in.Stats()
				return rows >= n && s.Received+s.Duplicates+s.Poisoned == n+int64(republished)+2
			}, "all %d messages taken in and applied", n)
			waitFor(t, 10*time.Second, func() bool { return b.count(t, &am.ConsumerMessage{}) == 0 }, "the receiver's queue empty")
			if rows, distinct := applied(t, b); rows != n || distinct != n {
				t.Fatalf("applied %d rows for %d orders, want %d once each", rows, distinct, n)
			}
			if s := in.Stats(); s.Received != n || s.Duplicates != int64(republished) || s.Poisoned != 2 {
				t.Fatalf("stats %+v, want %d received, %d duplicates, 2 poisoned", s, n, republished)
			}
			var poisoned []am.PoisonedMessage
			if err := b.db.Order("insert_id").Find(&poisoned).Error; err != nil {
				t.Fatal(err)
			}
			if len(poisoned) != 2 || poisoned[0].InsertID != "bad-json" || !strings.Contains(poisoned[0].LastError, "does not decode") ||
				poisoned[1].InsertID != "unknown-type" || !strings.Contains(poisoned[1].LastError, `"InvoicePaid" is not accepted`) {
				t.Fatalf("poisoned rows %+v, want bad-json (does not decode) and unknown-type (not accepted)", poisoned)
			}
			if poisoned[0].ConsumerType != natsrelay.InboxConsumerName("b") {
				t.Fatalf("poisoned consumer type %q", poisoned[0].ConsumerType)
			}
		})
	}
}

// An ack that comes too late (the write outlived AckWait, so JetStream redelivered the
// messages to a second instance sharing the durable) is a redelivery the inboxes drop:
// each order is applied once.
func TestInboxDropsRedeliveryAfterSlowCommit(t *testing.T) {
	for _, dialect := range testdb.Dialects {
		t.Run(dialect, func(t *testing.T) {
			nc := connect(t)
			js, _ := jetstream.New(nc)
			st, prefix := newStream(t, nc, jetstream.StreamConfig{})
			var slowed atomic.Bool
			b := newService(t, testdb.Open(t, dialect), am.Config{Hooks: am.Hooks{Produced: func(context.Context, []am.ConsumerMessage) {
				if slowed.CompareAndSwap(false, true) {
					time.Sleep(1500 * time.Millisecond) // the inbox's first transaction outlives AckWait: JetStream redelivers
				}
			}}})
			applyConsumer(t, b)
			cfg := natsrelay.InboxConfig{Stream: streamName(t, st), Durable: "slow", AckWait: time.Second, FetchBatch: 10, RetryDelay: 100 * time.Millisecond}
			in, in2 := newInbox(t, b, nc, cfg), newInbox(t, b, nc, cfg)
			const n = 10
			for i := range n {
				data, _ := json.Marshal(OrderCancelled{OrderID: i})
				publishRaw(t, js, prefix+".orders", "m"+strconv.Itoa(i), "OrderCancelled", data)
			}
			b.start(t)
			startInbox(t, in)
			waitFor(t, 10*time.Second, slowed.Load, "the first write to start")
			startInbox(t, in2)
			stats := func() natsrelay.InboxStats {
				s1, s2 := in.Stats(), in2.Stats()
				return natsrelay.InboxStats{Received: s1.Received + s2.Received, Duplicates: s1.Duplicates + s2.Duplicates, Failed: s1.Failed + s2.Failed}
			}
			waitFor(t, 30*time.Second, func() bool { return stats().Duplicates >= 1 && stats().Received == n }, "the late-acked messages redelivered and dropped")
			waitFor(t, 10*time.Second, func() bool { return b.count(t, &am.ConsumerMessage{}) == 0 }, "the receiver's queue empty")
			if rows, distinct := applied(t, b); rows != n || distinct != n {
				t.Fatalf("applied %d rows for %d orders, want %d once each", rows, distinct, n)
			}
			if s := stats(); s.Received != n {
				t.Fatalf("stats %+v, want %d received", s, n)
			}
			t.Logf("stats %+v", stats())
		})
	}
}

func streamName(t testing.TB, st jetstream.Stream) string {
	t.Helper()
	return st.CachedInfo().Config.Name
}

// Settings are validated with errors naming the field; a stream that does not exist is
// a clear error.
func TestConfigErrorsNameTheField(t *testing.T) {
	nc := connect(t)
	b := newService(t, testdb.Open(t, "sqlite"), am.Config{})
	ctx := context.Background()
	cases := []struct {
		cfg   natsrelay.InboxConfig
		field string
	}{
		{natsrelay.InboxConfig{Durable: "d"}, "InboxConfig.Stream"},
		{natsrelay.InboxConfig{Stream: "S"}, "InboxConfig.Durable"},
		{natsrelay.InboxConfig{Stream: "S", Durable: "a.b"}, "InboxConfig.Durable"},
		{natsrelay.InboxConfig{Stream: "S", Durable: "a*"}, "InboxConfig.Durable"},
		{natsrelay.InboxConfig{Stream: "S", Durable: "a>"}, "InboxConfig.Durable"},
		{natsrelay.InboxConfig{Stream: "S/x", Durable: "d"}, "InboxConfig.Stream"},
		{natsrelay.InboxConfig{Stream: "S", Durable: "d", FetchBatch: 10_001}, "InboxConfig.FetchBatch"},
		{natsrelay.InboxConfig{Stream: "S", Durable: "d", FilterSubjects: []string{""}}, "InboxConfig.FilterSubjects[0]"},
		{natsrelay.InboxConfig{Stream: "S.x", Durable: "d"}, "InboxConfig.Stream"},
		{natsrelay.InboxConfig{Stream: "S", Durable: strings.Repeat("d", am.NameMaxLen-len(natsrelay.InboxConsumerName(""))+1)}, "InboxConfig.Durable"},
		{natsrelay.InboxConfig{Stream: "S", Durable: "d", FetchWait: -time.Second}, "InboxConfig.FetchWait"},
		{natsrelay.InboxConfig{Stream: "S", Durable: "d", RetryDelay: -time.Second}, "InboxConfig.RetryDelay"},
		{natsrelay.InboxConfig{Stream: "S", Durable: "d", MaxDeliveries: -1}, "InboxConfig.MaxDeliveries"},
		{natsrelay.InboxConfig{Stream: "S", Durable: "d", DedupRetention: time.Second}, "InboxConfig.DedupRetention"},
		{natsrelay.InboxConfig{Stream: "S", Durable: "d", FetchBatch: -1}, "InboxConfig.FetchBatch"},
		{natsrelay.InboxConfig{Stream: "S", Durable: "d", AckWait: time.Millisecond}, "InboxConfig.AckWait"},
		{natsrelay.InboxConfig{Stream: "S", Durable: "d", FilterSubjects: []string{"a b"}}, "InboxConfig.FilterSubjects[0]"},
	}
	for _, c := range cases {
		_, err := natsrelay.NewInbox(ctx, b.db, nc, c.cfg)
		var ce *natsrelay.ConfigError
		if !errors.As(err, &ce) || ce.Field != c.field || !errors.Is(err, natsrelay.ErrInvalidConfig) {
			t.Errorf("%+v: error %v, want a ConfigError naming %s", c.cfg, err, c.field)
		}
	}
	if _, err := natsrelay.NewInbox(ctx, b.db, nc, natsrelay.InboxConfig{Stream: "NoSuchStream" + randomName(), Durable: "d"}); !errors.Is(err, natsrelay.ErrNoStream) {
		t.Errorf("missing stream: %v, want ErrNoStream", err)
	}
	for cfg, field := range map[*natsrelay.RelayConfig]string{
		{SubjectPrefix: "a b"}:      "RelayConfig.SubjectPrefix",
		{SubjectPrefix: "orders.*"}: "RelayConfig.SubjectPrefix",
		{SubjectPrefix: "orders."}:  "RelayConfig.SubjectPrefix",
		{SubjectPrefix: ">"}:        "RelayConfig.SubjectPrefix",
		{PublishTimeout: -1}:        "RelayConfig.PublishTimeout",
		{PublishTimeout: time.Hour}: "RelayConfig.PublishTimeout",
		{MaxAttempts: -2}:           "RelayConfig.MaxAttempts",
		{MaxPending: -1}:            "RelayConfig.MaxPending",
		{SubjectPrefix: "orders>"}:  "",
	} {
		_, err := natsrelay.NewRelay(nc, *cfg)
		var ce *natsrelay.ConfigError
		if field == "" {
			if err != nil {
				t.Errorf("%+v: %v, want accepted", *cfg, err)
			}
			continue
		}
		if !errors.As(err, &ce) || ce.Field != field {
			t.Errorf("%+v: error %v, want a ConfigError naming %s", *cfg, err, field)
		}
	}
}

func TestCheckSubject(t *testing.T) {
	for _, s := range []string{"orders", "a.b.c", "asyncmonolith.OrderCancelled", "ünïcode.ok", "a*b.c"} {
		if err := natsrelay.CheckSubject(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	for _, s := range []string{"", "a b", "a\tb", "a\x00b", ".a", "a.", "a..b", "a.*", ">", "a.>.b", "\xff", "$JS.API.STREAM.PURGE.S", "$SYS.REQ.SERVER.PING", "$KV.b.k", "_INBOX.abc", strings.Repeat("a", natsrelay.SubjectMaxLen+1)} {
		if err := natsrelay.CheckSubject(s); !errors.Is(err, natsrelay.ErrInvalidSubject) {
			t.Errorf("%q: %v, want ErrInvalidSubject", s, err)
		}
	}
}
