package natsrelay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Outgoing is what a RelayConfig.Subject function sees of a message.
type Outgoing struct {
	ID          string    // the message id (sent as Nats-Msg-Id)
	InsertID    string    // the producer's insert id
	PayloadType string    // the payload type name
	Attempt     int       // 1 on the first run
	CreatedAt   time.Time // when it was produced
	Data        []byte    // the payload, JSON
}

// Relay publishes asyncmonolith messages to JetStream. Its publishes share one
// asynchronous pipeline: the consumers of a batch run concurrently, each publishes and
// waits for its own ack, so a batch is about one round trip. Create one with NewRelay and
// bind payload types to it with Forward.
type Relay struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	cfg RelayConfig
	log *slog.Logger

	published  atomic.Int64
	duplicates atomic.Int64
	failed     atomic.Int64
}

// RelayStats counts a relay's publishes since it was created.
type RelayStats struct {
	Published  int64 // acknowledged by JetStream (duplicates included)
	Duplicates int64 // acknowledged as duplicates: JetStream had the message id already and dropped it
	Failed     int64 // publishes that failed (retried or poisoned)
}

// NewRelay returns a relay publishing on nc. It validates cfg.
func NewRelay(nc *nats.Conn, cfg RelayConfig) (*Relay, error) {
	if nc == nil {
		return nil, &ConfigError{"nc", nil, "a *nats.Conn is required"}
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(cfg.MaxPending),
		jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout))
	if err != nil {
		return nil, fmt.Errorf("natsrelay: jetstream: %w", err)
	}
	return &Relay{nc: nc, js: js, cfg: cfg, log: cfg.Logger}, nil
}

// Close releases what the relay holds on its connection (the subscription its acks
// arrive on): call it once the plugins forwarding through it stopped. A relay used after
// Close subscribes again.
func (r *Relay) Close() { r.js.CleanupPublisher() }

// Stats returns the relay's counts.
func (r *Relay) Stats() RelayStats {
	return RelayStats{Published: r.published.Load(), Duplicates: r.duplicates.Load(), Failed: r.failed.Load()}
}

// ConsumerName is the stored consumer name Forward gives the relay of payloadType.
func ConsumerName(payloadType string) string { return "natsrelay." + payloadType }

// Forward registers, on p, a consumer of T's messages that publishes each to JetStream
// through r and completes it once JetStream acknowledged it. Its consumer name is
// ConsumerName(T's payload type); opts may override it, its attempts
// (RelayConfig.MaxAttempts) and its timeout (twice RelayConfig.PublishTimeout).
func Forward[T any](p *am.Plugin, r *Relay, opts ...am.ConsumerOption) error {
	if r == nil {
		return &ConfigError{"r", nil, "a *Relay from NewRelay is required"}
	}
	var zero T
	payloadType, err := am.PayloadTypeOf(zero)
	if err != nil {
		return err
	}
	all := append([]am.ConsumerOption{am.WithName(ConsumerName(payloadType)),
		am.WithAttempts(r.cfg.MaxAttempts), am.WithTimeout(2 * r.cfg.PublishTimeout)}, opts...)
	return am.Register[T](p, am.ConsumerFunc[T](func(ctx context.Context, m *am.Message[T]) error {
		data, err := json.Marshal(m.Payload)
		if err != nil {
			return fmt.Errorf("natsrelay: encode %s: %w: %w", m.PayloadType, err, am.ErrPermanent)
		}
		return r.publish(ctx, Outgoing{ID: m.ID, InsertID: m.InsertID, PayloadType: m.PayloadType,
			Attempt: m.Attempt, CreatedAt: m.CreatedAt, Data: data}, m.TraceID, m.SpanID)
	}), all...)
}

// subject is the subject of o. A Subject function that panics on o yields an error
// wrapping ErrInvalidSubject: retrying would panic again.
func (r *Relay) subject(o Outgoing) (subject string, err error) {
	if r.cfg.Subject == nil {
		return r.cfg.SubjectPrefix + "." + o.PayloadType, nil
	}
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("%w: RelayConfig.Subject panicked on %s message %s: %v", ErrInvalidSubject, o.PayloadType, o.ID, v)
		}
	}()
	return r.cfg.Subject(o), nil
}

// publish sends o and waits for its ack.
func (r *Relay) publish(ctx context.Context, o Outgoing, traceID, spanID string) error {
	err := r.send(ctx, o, traceID, spanID)
	if err != nil {
		r.failed.Add(1)
	}
	return err
}

func (r *Relay) send(ctx context.Context, o Outgoing, traceID, spanID string) error {
	subject, err := r.subject(o)
	if err == nil {
		err = CheckSubject(subject)
	}
	if err != nil {
		return fmt.Errorf("%w (payload type %s: fix RelayConfig.Subject, then requeue): %w", err, o.PayloadType, am.ErrPermanent)
	}
	msg := &nats.Msg{Subject: subject, Data: o.Data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, o.ID)
	msg.Header.Set(HeaderPayloadType, o.PayloadType)
	msg.Header.Set(HeaderInsertID, o.InsertID)
	msg.Header.Set(HeaderAttempt, strconv.Itoa(o.Attempt))
	msg.Header.Set(HeaderCreatedAt, strconv.FormatInt(o.CreatedAt.UnixMilli(), 10))
	if len(traceID) == 32 && len(spanID) == 16 {
		msg.Header.Set(HeaderTraceParent, "00-"+traceID+"-"+spanID+"-01")
	}
	if max := r.nc.MaxPayload(); max > 0 && int64(msgSize(msg)) > max {
		return fmt.Errorf("%w: %s message %s is %d bytes with headers, the server allows %d: %w",
			ErrPayloadTooLarge, o.PayloadType, o.ID, msgSize(msg), max, am.ErrPermanent)
	}
	paf, err := r.js.PublishMsgAsync(msg)
	if err != nil {
		if errors.Is(err, nats.ErrMaxPayload) {
			return fmt.Errorf("%w: %s message %s: %w: %w", ErrPayloadTooLarge, o.PayloadType, o.ID, err, am.ErrPermanent)
		}
		return fmt.Errorf("%w: publish to %s: %w", ErrUnavailable, subject, err)
	}
	select {
	case ack := <-paf.Ok():
		r.published.Add(1)
		if ack.Duplicate {
			r.duplicates.Add(1)
		}
		return nil
	case err := <-paf.Err():
		return r.ackError(ctx, subject, err)
	case <-ctx.Done():
		return fmt.Errorf("%w: no ack from %s: %w", ErrUnavailable, subject, ctx.Err())
	}
}

// ackError classifies a failed publish: no stream for the subject is permanent (the
// message is poisoned with the reason); anything else is JetStream being unavailable.
func (r *Relay) ackError(ctx context.Context, subject string, err error) error {
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		// Nobody answered: either no stream captures the subject, or JetStream is not
		// ready. Ask the API which, so a restart does not poison the backlog.
		lookup, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
		defer cancel()
		_, lerr := r.js.StreamNameBySubject(lookup, subject)
		if errors.Is(lerr, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("%w: %q (create a stream for it, then requeue the poisoned messages): %w", ErrNoStream, subject, am.ErrPermanent)
		}
	}
	if errors.Is(err, jetstream.ErrInvalidJSAck) {
		// Something answered that is not a stream (a plain NATS service on the subject):
		// each retry would hand it the message again.
		return fmt.Errorf("%w: %q is answered by a subscriber that is not a JetStream stream: %w: %w", ErrNoStream, subject, err, am.ErrPermanent)
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code == 400 {
		// The stream refused the message (a subject its config rejects, a size over its
		// max_msg_size): retrying sends the same message.
		return fmt.Errorf("natsrelay: stream refused %s: %w: %w", subject, err, am.ErrPermanent)
	}
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, subject, err)
}

// msgSize is what the server counts against max_payload: headers and data.
func msgSize(m *nats.Msg) int {
	n := len(m.Data)
	if len(m.Header) > 0 {
		n += len("NATS/1.0\r\n\r\n")
		for k, vs := range m.Header {
			for _, v := range vs {
				n += len(k) + len(v) + 4
			}
		}
	}
	return n
}
