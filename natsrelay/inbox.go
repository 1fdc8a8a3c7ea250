package natsrelay

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gorm.io/gorm"
)

// Inbox takes messages from a JetStream durable pull consumer into the receiver's
// database: each fetch is written in one transaction (asyncmonolith.Produce per message,
// with its id as the insert id, plus its id in natsrelay_inbox) and acked once that
// committed. A message seen before is acked and dropped; one that cannot be decoded is
// recorded in poisoned_messages with the reason. A durable found gone (deleted, or its
// stream deleted and created again) is created again, with the same config.
type Inbox struct {
	db    *gorm.DB
	js    jetstream.JetStream
	cc    jetstream.ConsumerConfig // to create the durable again when it is gone
	cfg   InboxConfig
	log   *slog.Logger
	types sync.Map // payload type name → func([]byte) (any, error)

	mu      sync.Mutex
	cons    jetstream.Consumer
	cancel  context.CancelFunc
	done    chan struct{}
	pruneAt time.Time
	checkAt time.Time // when an idle fetch next looks for the durable

	received   atomic.Int64
	duplicates atomic.Int64
	poisoned   atomic.Int64
	failed     atomic.Int64
}

// InboxStats counts an inbox's messages since it was created.
type InboxStats struct {
	Received   int64 // written to the database and acked
	Duplicates int64 // seen before (a redelivery or a republish): acked and dropped
	Poisoned   int64 // recorded in poisoned_messages (undecodable, unknown type, or failing writes)
	Failed     int64 // writes that failed and were left for redelivery
}

// NewInbox creates (or updates) the durable consumer cfg.Durable on cfg.Stream and
// creates the natsrelay_inbox table in db, which must have the asyncmonolith plugin.
func NewInbox(ctx context.Context, db *gorm.DB, nc *nats.Conn, cfg InboxConfig) (*Inbox, error) {
	if db == nil || nc == nil {
		return nil, &ConfigError{"db, nc", nil, "a *gorm.DB with the plugin and a *nats.Conn are required"}
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("natsrelay: jetstream: %w", err)
	}
	cc := jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxAckPending: max(1000, 4*cfg.FetchBatch),
	}
	if cfg.DeliverNew {
		cc.DeliverPolicy = jetstream.DeliverNewPolicy
		if info, err := js.Consumer(ctx, cfg.Stream, cfg.Durable); err == nil {
			cc.DeliverPolicy = info.CachedInfo().Config.DeliverPolicy // the server refuses to change it
		}
	}
	if len(cfg.FilterSubjects) == 1 {
		cc.FilterSubject = cfg.FilterSubjects[0] // servers before 2.10 know only this form
	} else {
		cc.FilterSubjects = cfg.FilterSubjects
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, cfg.Stream, cc)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%w: stream %q does not exist (InboxConfig.Stream): %w", ErrNoStream, cfg.Stream, err)
	}
	if err != nil {
		return nil, fmt.Errorf("natsrelay: consumer %s on stream %s: %w", cfg.Durable, cfg.Stream, err)
	}
	if err := db.WithContext(ctx).AutoMigrate(&Received{}); err != nil {
		return nil, fmt.Errorf("natsrelay: create %s: %w", Received{}.TableName(), err)
	}
	if db.Dialector.Name() == "mysql" {
		// Ids are compared byte for byte: MySQL's default collation would take two ids
		// that differ only in case for one. Altered once: an ALTER at every start may
		// copy a table of a week's ids.
		var collation string
		if err := db.WithContext(ctx).Raw(`SELECT COALESCE(collation_name, '') FROM information_schema.columns
			WHERE table_schema = DATABASE() AND table_name = 'natsrelay_inbox' AND column_name = 'id'`).Scan(&collation).Error; err != nil {
			return nil, fmt.Errorf("natsrelay: %s collation: %w", Received{}.TableName(), err)
		}
		if collation != "utf8mb4_bin" {
			if err := db.WithContext(ctx).Exec("ALTER TABLE natsrelay_inbox MODIFY id varchar(255) COLLATE utf8mb4_bin NOT NULL").Error; err != nil {
				return nil, fmt.Errorf("natsrelay: %s collation: %w", Received{}.TableName(), err)
			}
		}
	}
	return &Inbox{db: db, js: js, cc: cc, cons: cons, cfg: cfg, log: cfg.Logger}, nil
}

// Accept makes in take messages of T's payload type: they are decoded into T and
// produced in the receiver's database, where T's registered consumers run.
func Accept[T any](in *Inbox) error {
	var zero T
	name, err := am.PayloadTypeOf(zero)
	if err != nil {
		return err
	}
	decode := func(data []byte) (_ any, err error) {
		defer func() {
			if v := recover(); v != nil { // a hostile payload and a T whose UnmarshalJSON panics
				err = fmt.Errorf("decoding panicked: %v", v)
			}
		}()
		var v T
		err = json.Unmarshal(data, &v)
		return v, err
	}
	if _, taken := in.types.LoadOrStore(name, decode); taken {
		return fmt.Errorf("%w: %q", ErrDuplicateType, name)
	}
	return nil
}

// Stats returns the inbox's counts.
func (in *Inbox) Stats() InboxStats {
	return InboxStats{Received: in.received.Load(), Duplicates: in.duplicates.Load(),
		Poisoned: in.poisoned.Load(), Failed: in.failed.Load()}
}

// Start fetches and writes in the background until Stop or ctx ends. An inbox whose
// ctx ended can be started again without a Stop.
func (in *Inbox) Start(ctx context.Context) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cancel != nil {
		select {
		case <-in.done: // its ctx ended
			in.cancel()
		default:
			return ErrAlreadyStarted
		}
	}
	ctx, in.cancel = context.WithCancel(ctx)
	in.done = make(chan struct{})
	go in.loop(ctx, in.done)
	return nil
}

// Stop ends the background loop and waits for it to end (or for ctx). A fetch waiting for
// messages ends at once; a write in progress is cancelled and rolled back, and its
// messages are redelivered after RetryDelay (nothing is acked that did not commit).
func (in *Inbox) Stop(ctx context.Context) error {
	in.mu.Lock()
	cancel, done := in.cancel, in.done
	in.cancel, in.done = nil, nil
	in.mu.Unlock()
	if cancel == nil {
		return ErrNotStarted
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (in *Inbox) loop(ctx context.Context, done chan struct{}) {
	defer close(done)
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		_, err := in.Fetch(ctx)
		if err == nil {
			backoff = 50 * time.Millisecond
			continue
		}
		if ctx.Err() != nil {
			return
		}
		in.log.WarnContext(ctx, "natsrelay: inbox fetch failed; retrying", "stream", in.cfg.Stream, "durable", in.cfg.Durable, "error", err, "retry_in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// Fetch takes one batch: the messages available now (up to InboxConfig.FetchBatch), or,
// when there are none, the first to arrive within FetchWait and those behind it. It
// writes them and returns how many it fetched.
func (in *Inbox) Fetch(ctx context.Context) (int, error) {
	msgs, err := in.fetch(ctx)
	if len(msgs) > 0 { // fetched messages are written (or left for redelivery) even beside an error
		in.write(ctx, msgs)
		in.prune(ctx)
	}
	return len(msgs), err
}

func (in *Inbox) fetch(ctx context.Context) ([]jetstream.Msg, error) {
	msgs, err := in.fetchFrom(ctx, in.consumer())
	// A fetch from a durable that is gone finds nothing, like an idle one: an idle inbox
	// looks for its durable every durableCheck.
	if ctx.Err() == nil && (err != nil || (len(msgs) == 0 && in.checkDue())) {
		if rerr := in.recreate(ctx); rerr != nil {
			if err == nil {
				return msgs, rerr
			}
			return msgs, fmt.Errorf("%w (%w)", err, rerr)
		}
	}
	return msgs, err
}

// durableCheck is how often an idle inbox makes sure its durable is still there.
const durableCheck = 5 * time.Second

func (in *Inbox) checkDue() bool {
	now := in.cfg.Now()
	in.mu.Lock()
	defer in.mu.Unlock()
	if now.Before(in.checkAt) {
		return false
	}
	in.checkAt = now.Add(durableCheck)
	return true
}

func (in *Inbox) consumer() jetstream.Consumer {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.cons
}

// recreate creates the durable again when it is gone (deleted, or its stream deleted and
// created again); a fetch from it then works again.
func (in *Inbox) recreate(ctx context.Context) error {
	_, err := in.js.Consumer(ctx, in.cfg.Stream, in.cfg.Durable)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("%w: stream %q is gone", ErrNoStream, in.cfg.Stream)
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return nil // there, or JetStream unreachable: the fetch's error says enough
	}
	cons, err := in.js.CreateOrUpdateConsumer(ctx, in.cfg.Stream, in.cc)
	if err != nil {
		return fmt.Errorf("natsrelay: create durable %s on stream %s again: %w", in.cfg.Durable, in.cfg.Stream, err)
	}
	in.log.WarnContext(ctx, "natsrelay: the inbox's durable was gone; created it again", "stream", in.cfg.Stream, "durable", in.cfg.Durable)
	in.mu.Lock()
	in.cons = cons
	in.mu.Unlock()
	return nil
}

func (in *Inbox) fetchFrom(ctx context.Context, cons jetstream.Consumer) ([]jetstream.Msg, error) {
	msgs, err := collect(cons.FetchNoWait(in.cfg.FetchBatch))
	if err != nil || len(msgs) > 0 {
		return msgs, err
	}
	// The wait ends with ctx too: Stop does not wait out an idle fetch.
	wctx, cancel := context.WithTimeout(ctx, in.cfg.FetchWait)
	defer cancel()
	first, err := collect(cons.Fetch(1, jetstream.FetchContext(wctx)))
	if len(first) == 0 && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err != nil && wctx.Err() != nil {
		err = nil // FetchWait passed with nothing to fetch
	}
	if err != nil || len(first) == 0 || in.cfg.FetchBatch == 1 {
		return first, err
	}
	rest, err := collect(cons.FetchNoWait(in.cfg.FetchBatch - 1))
	if err != nil {
		return first, nil // written now; the next fetch meets the error again
	}
	return append(first, rest...), nil
}

// collect drains a fetch. Messages already received are kept when it ends in an error.
func collect(b jetstream.MessageBatch, err error) ([]jetstream.Msg, error) {
	if err != nil {
		return nil, err
	}
	var msgs []jetstream.Msg
	for m := range b.Messages() {
		msgs = append(msgs, m)
	}
	if err := b.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && len(msgs) == 0 {
		return nil, err
	}
	return msgs, nil
}

// incoming is one fetched message, decoded.
type incoming struct {
	msg     jetstream.Msg
	key     string // the dedup key: Nats-Msg-Id, or streamKey
	payload any
	bad     string // why it cannot be produced ("" when it can)
}

func (in *Inbox) decode(m jetstream.Msg) incoming {
	it := incoming{msg: m, key: m.Headers().Get(jetstream.MsgIDHeader)}
	if !storableName(it.key) {
		// Missing, over-long, or bytes no database stores alike (NUL, invalid UTF-8):
		// its place in the stream is the key (a republish of it is then taken in again).
		meta, err := m.Metadata()
		if err != nil {
			it.key = "nats:" + m.Subject()
			it.bad = "no Nats-Msg-Id and no metadata: " + err.Error()
			return it
		}
		it.key = streamKey(meta)
	}
	pt := m.Headers().Get(HeaderPayloadType)
	dec, ok := in.types.Load(pt)
	if !ok {
		it.bad = fmt.Sprintf("payload type %q is not accepted by this inbox (header %s; call natsrelay.Accept)", pt, HeaderPayloadType)
		return it
	}
	v, err := dec.(func([]byte) (any, error))(m.Data())
	if err != nil {
		it.bad = fmt.Sprintf("payload of type %q does not decode: %v", pt, err)
		return it
	}
	it.payload = v
	return it
}

// streamKey is the dedup key of a message without a usable Nats-Msg-Id: its place in the
// stream and when it was stored there, since a stream deleted and created again numbers
// its messages from 1 again. A key over NameMaxLen (a long stream name) is hashed.
func streamKey(meta *jetstream.MsgMetadata) string {
	key := meta.Stream + ":" + strconv.FormatUint(meta.Sequence.Stream, 10) + ":" + strconv.FormatInt(meta.Timestamp.UnixNano(), 10)
	if len(key) > am.NameMaxLen {
		sum := sha256.Sum256([]byte(key))
		key = "sha256:" + hex.EncodeToString(sum[:])
	}
	return key
}

// write stores msgs in one transaction and acks them; when that fails, each one alone.
func (in *Inbox) write(ctx context.Context, msgs []jetstream.Msg) {
	items := make([]incoming, len(msgs))
	for i, m := range msgs {
		items[i] = in.decode(m)
	}
	if err := in.apply(ctx, items, false); err == nil {
		return
	} else if len(items) == 1 {
		in.retry(ctx, items[0], err)
		return
	}
	for _, it := range items {
		if err := in.apply(ctx, []incoming{it}, false); err != nil {
			in.retry(ctx, it, err)
		}
	}
}

// retry leaves a message whose write failed for redelivery, or records it as poisoned
// once it was delivered MaxDeliveries times.
func (in *Inbox) retry(ctx context.Context, it incoming, cause error) {
	if permanent(cause) && ctx.Err() == nil {
		it.bad = fmt.Sprintf("the receiver cannot produce it: %v", cause)
		it.payload = nil
		if in.apply(ctx, []incoming{it}, true) == nil {
			return
		}
	}
	in.failed.Add(1)
	meta, err := it.msg.Metadata()
	if err == nil && meta.NumDelivered >= uint64(in.cfg.MaxDeliveries) && ctx.Err() == nil {
		it.bad = fmt.Sprintf("write failed on %d deliveries; last error: %v", meta.NumDelivered, cause)
		it.payload = nil
		if in.apply(ctx, []incoming{it}, true) == nil {
			return
		}
	}
	in.log.WarnContext(ctx, "natsrelay: inbox write failed; the message is redelivered", "key", it.key, "subject", it.msg.Subject(), "error", cause)
	_ = it.msg.NakWithDelay(in.cfg.RetryDelay)
}

// apply writes items in one transaction, then acks them.
func (in *Inbox) apply(ctx context.Context, items []incoming, forcePoison bool) error {
	now := in.cfg.Now()
	var fresh, dups int
	var poisoned int64
	err := in.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		fresh, dups, poisoned = 0, 0, 0
		isNew, err := in.claimKeys(tx, items, now)
		if err != nil {
			return err
		}
		payloads, ids := make([]any, 0, len(items)), make([]string, 0, len(items))
		for _, it := range items {
			if !isNew[it.key] {
				dups++
				continue
			}
			delete(isNew, it.key) // the same id twice in one fetch: a republish
			fresh++
			if it.bad != "" || forcePoison {
				poisoned++
				if err := tx.Create(in.poisonRow(it, now)).Error; err != nil {
					return err
				}
				continue
			}
			if in.cfg.Extract != nil {
				// Each message has a trace context of its own: one Produce each.
				if err := am.ProduceTx(in.extract(ctx, it), tx, it.payload, am.InsertID(it.key)); err != nil {
					return err
				}
				continue
			}
			payloads, ids = append(payloads, it.payload), append(ids, it.key)
		}
		if len(payloads) > 0 {
			return am.ProduceBatch(tx, payloads, am.InsertIDs(ids...)).Error
		}
		return nil
	})
	if err != nil {
		return err
	}
	in.received.Add(int64(fresh) - poisoned)
	in.duplicates.Add(int64(dups))
	in.poisoned.Add(poisoned)
	for _, it := range items {
		if it.bad != "" {
			in.log.WarnContext(ctx, "natsrelay: inbox message poisoned", "key", it.key, "subject", it.msg.Subject(), "reason", it.bad)
		}
		// Acked without waiting for the server's confirmation: a lost ack is a
		// redelivery, which natsrelay_inbox drops.
		_ = it.msg.Ack()
	}
	return nil
}

// extract is InboxConfig.Extract on the headers of it. A panic there (on headers a hostile
// publisher set) is logged and the message produced with ctx, without its trace context.
func (in *Inbox) extract(ctx context.Context, it incoming) (out context.Context) {
	defer func() {
		if v := recover(); v != nil {
			in.log.WarnContext(ctx, "natsrelay: InboxConfig.Extract panicked; the message is taken in without its trace context",
				"key", it.key, "subject", it.msg.Subject(), "panic", fmt.Sprint(v))
			out = ctx
		}
	}()
	return in.cfg.Extract(ctx, it.msg.Headers())
}

// claimKeys records the keys of items in natsrelay_inbox and returns those that were not
// there yet. PostgreSQL and SQLite do it in one INSERT … ON CONFLICT DO NOTHING RETURNING;
// MySQL, without RETURNING, reads the known keys first (a concurrent inbox writing the
// same key then fails this transaction on the primary key, and the messages are redelivered).
func (in *Inbox) claimKeys(tx *gorm.DB, items []incoming, now time.Time) (map[string]bool, error) {
	keys := make([]string, 0, len(items))
	isNew := make(map[string]bool, len(items))
	for _, it := range items {
		if !isNew[it.key] {
			isNew[it.key] = true
			keys = append(keys, it.key)
		}
	}
	if tx.Dialector.Name() != "mysql" {
		q := make([]byte, 0, 64+12*len(keys))
		q = append(q, "INSERT INTO natsrelay_inbox (id, received_at) VALUES "...)
		args := make([]any, 0, 2*len(keys))
		for i, k := range keys {
			if i > 0 {
				q = append(q, ',')
			}
			q = append(q, "(?, ?)"...)
			args = append(args, k, now.UnixMilli())
		}
		q = append(q, " ON CONFLICT (id) DO NOTHING RETURNING id"...)
		var inserted []string
		if err := tx.Raw(string(q), args...).Scan(&inserted).Error; err != nil {
			return nil, err
		}
		clear(isNew)
		for _, k := range inserted {
			isNew[k] = true
		}
		return isNew, nil
	}
	var known []string
	if err := tx.Model(&Received{}).Where("id IN ?", keys).Pluck("id", &known).Error; err != nil {
		return nil, err
	}
	rows := make([]Received, 0, len(keys))
	for _, k := range known {
		delete(isNew, k)
	}
	for _, k := range keys {
		if isNew[k] {
			rows = append(rows, Received{ID: k, ReceivedAt: now.UnixMilli()})
		}
	}
	if len(rows) == 0 {
		return isNew, nil
	}
	return isNew, tx.CreateInBatches(rows, 500).Error
}

// permanent reports whether a write failed on the message itself (its payload or names,
// or a receiver without a consumer for its type): a redelivery would fail alike.
func permanent(err error) bool {
	return errors.Is(err, am.ErrInvalidName) || errors.Is(err, am.ErrInvalidPayload) || errors.Is(err, am.ErrNoConsumers)
}

// poisonRow records a message the inbox cannot produce, with the reason. A payload that
// is not text every database stores (NUL bytes, invalid UTF-8) is kept in base64.
func (in *Inbox) poisonRow(it incoming, now time.Time) *am.PoisonedMessage {
	payload, reason := string(it.msg.Data()), "natsrelay inbox: "+it.bad
	if !storableText(payload) {
		payload = base64.StdEncoding.EncodeToString(it.msg.Data())
		reason += " (the payload, not valid UTF-8 text without NUL, is stored in base64)"
	}
	return &am.PoisonedMessage{
		ID: "natsrelay-" + nuidNext(), CreatedAt: now.UnixMilli(), AvailableAfter: now.UnixMilli(), Attempts: 1,
		ConsumerType: InboxConsumerName(in.cfg.Durable), PayloadType: cleanName(it.msg.Headers().Get(HeaderPayloadType)),
		Payload: payload, InsertID: it.key, LastError: reason, PoisonedAt: now.UnixMilli(),
	}
}

// storableText reports whether s is text every database stores as is: valid UTF-8
// without NUL (PostgreSQL refuses both, MySQL invalid UTF-8).
func storableText(s string) bool { return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 }

// storableName reports whether s can be stored as an insert id.
func storableName(s string) bool { return s != "" && len(s) <= am.NameMaxLen && storableText(s) }

// cleanName is s made storable as a name: invalid bytes and NUL replaced, cut to
// NameMaxLen bytes on a character boundary.
func cleanName(s string) string {
	if storableName(s) || s == "" {
		return s
	}
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
	for len(s) > am.NameMaxLen {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return s
}

// InboxConsumerName is the consumer type of the poisoned_messages rows an inbox records.
func InboxConsumerName(durable string) string { return "natsrelay.inbox." + durable }

// prune deletes received ids older than DedupRetention, at most once a minute.
func (in *Inbox) prune(ctx context.Context) {
	now := in.cfg.Now()
	in.mu.Lock()
	due := !now.Before(in.pruneAt)
	if due {
		in.pruneAt = now.Add(time.Minute)
	}
	in.mu.Unlock()
	if !due {
		return
	}
	cut := now.Add(-in.cfg.DedupRetention).UnixMilli()
	if err := in.db.WithContext(ctx).Where("received_at < ?", cut).Delete(&Received{}).Error; err != nil {
		in.log.WarnContext(ctx, "natsrelay: pruning received ids failed", "error", err)
	}
}
