package natsrelay_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"github.com/asyncmonolith/asyncmonolith/natsrelay"
	"github.com/nats-io/nats.go/jetstream"
	"gorm.io/gorm"
)

// The receiver's database connection dies in the middle of the inbox's transaction (its
// PostgreSQL backend terminated after the rows were inserted, before the commit): nothing
// of that fetch is acked, JetStream redelivers it, and every order is applied once.
func TestInboxDatabaseGoneMidWrite(t *testing.T) {
	nc := connect(t)
	js, _ := jetstream.New(nc)
	st, prefix := newStream(t, nc, jetstream.StreamConfig{})
	db := testdb.Open(t, "postgres")
	var kills atomic.Int32
	b := newService(t, db, am.Config{Hooks: am.Hooks{Produced: func(ctx context.Context, rows []am.ConsumerMessage) {
		if rows[0].ConsumerType != "ApplyCancellation" || kills.Load() >= 3 {
			return
		}
		// The inbox's transaction holds a lock on this schema's natsrelay_inbox: end its backend.
		var n int
		if err := db.Raw(`SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l
			WHERE l.relation = 'natsrelay_inbox'::regclass AND l.pid <> pg_backend_pid()`).Scan(&n).Error; err == nil && n > 0 {
			kills.Add(1)
		}
	}}})
	applyConsumer(t, b)
	in := newInbox(t, b, nc, natsrelay.InboxConfig{Stream: streamName(t, st), Durable: "gone", FetchBatch: 20, RetryDelay: 50 * time.Millisecond})
	const n = 100
	for i := range n {
		data, _ := json.Marshal(OrderCancelled{OrderID: i})
		publishRaw(t, js, prefix+".orders", "gone-"+strconv.Itoa(i), "OrderCancelled", data)
	}
	b.start(t)
	startInbox(t, in)
	waitFor(t, 30*time.Second, func() bool { return in.Stats().Received == n }, "all %d taken in", n)
	waitFor(t, 10*time.Second, func() bool { return b.count(t, &am.ConsumerMessage{}) == 0 }, "the receiver's queue empty")
	if rows, distinct := applied(t, b); rows != n || distinct != n {
		t.Fatalf("applied %d rows for %d orders, want %d once each", rows, distinct, n)
	}
	s := in.Stats()
	if kills.Load() == 0 || s.Failed == 0 || s.Poisoned != 0 {
		t.Fatalf("%d backends killed, stats %+v: want the kills to fail writes, none poisoned", kills.Load(), s)
	}
	t.Logf("%d backends killed mid-write; stats %+v", kills.Load(), s)
}

// On MySQL/MariaDB the inbox makes natsrelay_inbox's ids byte-compared once, not with an
// ALTER TABLE (a copy of a week's ids) at every start; ids differing only in case are two
// messages.
func TestInboxMySQLCollationAlteredOnce(t *testing.T) {
	nc := connect(t)
	js, _ := jetstream.New(nc)
	st, prefix := newStream(t, nc, jetstream.StreamConfig{})
	db := testdb.Open(t, "mysql")
	b := newService(t, db, am.Config{})
	applyConsumer(t, b)
	var alters atomic.Int32
	if err := db.Callback().Raw().After("gorm:raw").Register("test:alters", func(tx *gorm.DB) {
		if strings.Contains(tx.Statement.SQL.String(), "ALTER TABLE natsrelay_inbox") {
			alters.Add(1)
		}
	}); err != nil {
		t.Fatal(err)
	}
	cfg := natsrelay.InboxConfig{Stream: streamName(t, st), Durable: "case"}
	newInbox(t, b, nc, cfg)
	in := newInbox(t, b, nc, cfg)
	if n := alters.Load(); n != 1 {
		t.Fatalf("%d ALTER TABLE natsrelay_inbox over two starts, want 1", n)
	}
	publishRaw(t, js, prefix+".orders", "Case-1", "OrderCancelled", []byte(`{"order_id": 1}`))
	publishRaw(t, js, prefix+".orders", "case-1", "OrderCancelled", []byte(`{"order_id": 2}`))
	for in.Stats().Received+in.Stats().Duplicates < 2 {
		if _, err := in.Fetch(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if s := in.Stats(); s.Received != 2 {
		t.Fatalf("stats %+v, want both ids (differing in case) received", s)
	}
}
