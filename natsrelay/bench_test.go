package natsrelay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"github.com/asyncmonolith/asyncmonolith/natsrelay"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gorm.io/gorm"
)

// TestBenchmark prints the relay's and the inbox's throughput beside raw floors measured
// in the same run, and the commit→received latency across two services. It asserts
// nothing about speed. By default it is short (a few seconds, for the suite); for real
// figures:
//
//	NATSRELAY_BENCH_N=50000 NATSRELAY_BENCH_LATENCY=5s go test -run TestBenchmark -v .
func TestBenchmark(t *testing.T) {
	n := envInt("NATSRELAY_BENCH_N", 2000)
	latencyFor := 1 * time.Second
	if v, err := time.ParseDuration(os.Getenv("NATSRELAY_BENCH_LATENCY")); err == nil {
		latencyFor = v
	}
	for _, dialect := range []string{"sqlite", "postgres"} {
		t.Run(dialect, func(t *testing.T) {
			nc := connect(t)
			st, prefix := newStream(t, nc, jetstream.StreamConfig{})
			relayRate, floorRate := benchRelay(t, nc, st, prefix, dialect, n, am.Config{})
			noop := benchNoop(t, dialect, n, am.Config{})
			fmt.Printf("bench %-8s relay out, default settings:          %8.0f msgs/s   raw async publish floor: %8.0f msgs/s   ratio %.2f   (n=%d)\n",
				dialect, relayRate, floorRate, relayRate/floorRate, n)
			fmt.Printf("bench %-8s   no-op consumer, same outbox and settings: %8.0f msgs/s   relay ÷ no-op %.2f\n", dialect, noop, relayRate/noop)
			tuned := am.Config{ProcessorBatchSize: 1000, ConsumerConcurrency: 4000}
			relayRate, floorRate = benchRelay(t, nc, st, prefix, dialect, n, tuned)
			noop = benchNoop(t, dialect, n, tuned)
			fmt.Printf("bench %-8s relay out, batch 1000, concurrency 4000: %8.0f msgs/s   raw async publish floor: %8.0f msgs/s   ratio %.2f   (n=%d)\n",
				dialect, relayRate, floorRate, relayRate/floorRate, n)
			fmt.Printf("bench %-8s   no-op consumer, same outbox and settings: %8.0f msgs/s   relay ÷ no-op %.2f\n", dialect, noop, relayRate/noop)
			inRate, inFloor := benchInbox(t, nc, st, dialect, n)
			fmt.Printf("bench %-8s take in:   %8.0f msgs/s   raw fetch+SQL floor:     %8.0f msgs/s   ratio %.2f   (n=%d)\n",
				dialect, inRate, inFloor, inRate/inFloor, n)
			p50, p99, count := benchLatency(t, nc, dialect, latencyFor)
			fmt.Printf("bench %-8s commit→received across services: p50 %s  p99 %s  (%d messages at 200/s)\n",
				dialect, p50.Round(100*time.Microsecond), p99.Round(100*time.Microsecond), count)
		})
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// benchRelay measures outbox → stream for n produced messages, then the floor: the same
// payloads published by a plain PublishMsgAsync loop into the same stream.
func benchRelay(t *testing.T, nc *nats.Conn, st jetstream.Stream, prefix, dialect string, n int, cfg am.Config) (relayRate, floorRate float64) {
	before, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	a := newService(t, testdb.Open(t, dialect), cfg)
	relay, err := natsrelay.NewRelay(nc, natsrelay.RelayConfig{SubjectPrefix: prefix, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := natsrelay.Forward[OrderCancelled](a.p, relay); err != nil {
		t.Fatal(err)
	}
	a.produce(t, int(before.State.Msgs), int(before.State.Msgs)+n, 1000)
	start := time.Now()
	a.start(t)
	// Counters, not COUNT(*) polls, tell when it is done: polling the table would slow
	// the processor it measures.
	spin(t, func() bool { return relay.Stats().Published >= int64(n) })
	relayRate = float64(n) / time.Since(start).Seconds()
	waitFor(t, time.Minute, func() bool { return a.count(t, &am.ConsumerMessage{}) == 0 }, "outbox empty")

	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(natsrelay.MaxPendingDefault))
	if err != nil {
		t.Fatal(err)
	}
	payloads := make([][]byte, n)
	for i := range payloads {
		payloads[i], _ = json.Marshal(OrderCancelled{OrderID: i, Reason: "customer"})
	}
	start = time.Now()
	for i, data := range payloads {
		m := nats.NewMsg(prefix + ".floor")
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, "floor-"+strconv.FormatUint(before.State.LastSeq, 10)+"-"+strconv.Itoa(i))
		m.Header.Set(natsrelay.HeaderPayloadType, "OrderCancelled")
		if _, err := js.PublishMsgAsync(m); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		t.Fatal("floor publishes not acked within a minute")
	}
	floorRate = float64(n) / time.Since(start).Seconds()
	if info, err := st.Info(context.Background()); err != nil || info.State.Msgs != before.State.Msgs+uint64(2*n) {
		t.Fatalf("stream: %v, %+v; want %d more messages", err, info, 2*n)
	}
	return relayRate, floorRate
}

// benchInbox measures stream → receiver's database for the relay's n messages, then the
// floor: the same fetches from another durable consumer, with one plain multi-row SQL
// INSERT per fetch, in a transaction, and an ack per message.
func benchInbox(t *testing.T, nc *nats.Conn, st jetstream.Stream, dialect string, n int) (rate, floor float64) {
	stream := streamName(t, st)
	subject := st.CachedInfo().Config.Subjects[0]
	subject = subject[:len(subject)-1] + "OrderCancelled"
	b := newService(t, testdb.Open(t, dialect), am.Config{})
	applyConsumer(t, b) // registered, not started: the figure is the take-in alone
	in := newInbox(t, b, nc, natsrelay.InboxConfig{Stream: stream, Durable: "bench", FilterSubjects: []string{subject}, FetchWait: 100 * time.Millisecond})
	ctx := context.Background()
	start := time.Now()
	for deadline := time.Now().Add(5 * time.Minute); in.Stats().Received < int64(n); {
		if _, err := in.Fetch(ctx); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("take-in did not finish within 5 minutes: %+v", in.Stats())
		}
	}
	rate = float64(n) / time.Since(start).Seconds()
	if got := b.count(t, &am.ConsumerMessage{}); got != int64(n) {
		t.Fatalf("%d messages in B, want %d", got, n)
	}

	type rawRow struct {
		ID      string `gorm:"primaryKey;size:255"`
		Payload string
	}
	if err := b.db.Table("raw_inbox").AutoMigrate(&rawRow{}); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: "floor", AckPolicy: jetstream.AckExplicitPolicy,
		FilterSubject: subject, MaxAckPending: 1000})
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := b.db.DB()
	start = time.Now()
	for got, deadline := 0, time.Now().Add(5*time.Minute); got < n; {
		if time.Now().After(deadline) {
			t.Fatalf("floor take-in did not finish within 5 minutes: %d of %d", got, n)
		}
		batch, err := cons.Fetch(natsrelay.FetchBatchDefault, jetstream.FetchMaxWait(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if len(msgs) == 0 {
			continue
		}
		// One multi-row INSERT per fetch, in a transaction, as the inbox writes.
		q := []byte("INSERT INTO raw_inbox (id, payload) VALUES ")
		args := make([]any, 0, 2*len(msgs))
		for i, m := range msgs {
			if i > 0 {
				q = append(q, ',')
			}
			if dialect == "postgres" {
				q = fmt.Appendf(q, "($%d, $%d)", 2*i+1, 2*i+2)
			} else {
				q = append(q, "(?, ?)"...)
			}
			args = append(args, m.Headers().Get(jetstream.MsgIDHeader), string(m.Data()))
		}
		tx, err := sqlDB.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, string(q), args...); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			_ = m.Ack()
		}
		got += len(msgs)
	}
	floor = float64(n) / time.Since(start).Seconds()
	return rate, floor
}

// benchLatency runs two services (A relays, B takes in and consumes) and produces at
// 200 messages/s for d: each latency is from A's commit to B's consumer receiving it.
func benchLatency(t *testing.T, nc *nats.Conn, dialect string, d time.Duration) (p50, p99 time.Duration, count int) {
	st, prefix := newStream(t, nc, jetstream.StreamConfig{})
	a := newService(t, testdb.Open(t, dialect), am.Config{})
	b := newService(t, testdb.Open(t, dialect), am.Config{})
	relay, err := natsrelay.NewRelay(nc, natsrelay.RelayConfig{SubjectPrefix: prefix, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := natsrelay.Forward[OrderCancelled](a.p, relay); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	committed, received := map[int]time.Time{}, map[int]time.Time{}
	if err := am.Register[OrderCancelled](b.p, am.ConsumerFunc[OrderCancelled](func(_ context.Context, m *am.Message[OrderCancelled]) error {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if _, ok := received[m.Payload.OrderID]; !ok {
			received[m.Payload.OrderID] = now
		}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	in := newInbox(t, b, nc, natsrelay.InboxConfig{Stream: streamName(t, st), Durable: "latency"})
	a.start(t)
	b.start(t)
	startInbox(t, in)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	produced := 0
	for end := time.Now().Add(d); time.Now().Before(end); produced++ {
		<-tick.C
		if err := a.db.Transaction(func(tx *gorm.DB) error { return am.ProduceTx(t.Context(), tx, OrderCancelled{OrderID: produced}) }); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		committed[produced] = time.Now()
		mu.Unlock()
	}
	waitFor(t, time.Minute, func() bool { mu.Lock(); defer mu.Unlock(); return len(received) >= produced }, "all %d received", produced)
	mu.Lock()
	defer mu.Unlock()
	lat := make([]time.Duration, 0, produced)
	for id, c := range committed {
		lat = append(lat, received[id].Sub(c))
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100], len(lat)
}

// benchNoop is the relay's database side alone: the same backlog burnt down by a no-op
// consumer, with the same plugin settings.
func benchNoop(t *testing.T, dialect string, n int, cfg am.Config) float64 {
	a := newService(t, testdb.Open(t, dialect), cfg)
	var done atomic.Int64
	if err := am.Register[OrderCancelled](a.p, am.ConsumerFunc[OrderCancelled](func(context.Context, *am.Message[OrderCancelled]) error {
		done.Add(1)
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	a.produce(t, 0, n, 1000)
	start := time.Now()
	a.start(t)
	spin(t, func() bool { return done.Load() >= int64(n) })
	return float64(n) / time.Since(start).Seconds()
}

// spin waits for cond, checking every 100 µs, for 5 minutes at most.
func spin(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Minute); !cond(); time.Sleep(100 * time.Microsecond) {
		if time.Now().After(deadline) {
			t.Fatal("benchmark did not finish within 5 minutes")
		}
	}
}
