package natsrelay

import (
	"context"

	"fmt"
	"github.com/nats-io/nats.go"
	"log/slog"
	"strings"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// Documented defaults: a zero config field takes these values.
const (
	// SubjectPrefixDefault prefixes the payload type in the default subject
	// ("asyncmonolith.OrderCancelled").
	SubjectPrefixDefault = "asyncmonolith"
	// PublishTimeoutDefault bounds the wait for JetStream's ack of one publish.
	PublishTimeoutDefault = 5 * time.Second
	// RelayAttemptsDefault is how many runs a relayed message gets: a JetStream outage
	// must not poison the backlog (the breaker pauses the relay meanwhile, without
	// counting attempts), while bad input is poisoned at once.
	RelayAttemptsDefault = 1000
	// MaxPendingDefault caps the publishes awaiting an ack on one relay's pipeline.
	MaxPendingDefault = 4000

	// FetchBatchDefault is how many messages one inbox fetch asks for (and one
	// transaction writes).
	FetchBatchDefault = 100
	// FetchWaitDefault is how long one fetch waits for messages when the stream is idle.
	FetchWaitDefault = time.Second
	// AckWaitDefault is how long JetStream waits for the inbox's ack before redelivering.
	AckWaitDefault = 30 * time.Second
	// RetryDelayDefault is how long a message whose transaction failed waits before
	// JetStream redelivers it.
	RetryDelayDefault = 2 * time.Second
	// MaxDeliveriesDefault is how many deliveries a message whose write keeps failing
	// gets before the inbox records it in poisoned_messages.
	MaxDeliveriesDefault = 20
	// DedupRetentionDefault is how long the inbox keeps a message id to drop its
	// redeliveries and republishes.
	DedupRetentionDefault = 7 * 24 * time.Hour
)

// RelayConfig configures a Relay. Every field is optional.
type RelayConfig struct {
	// Subject chooses the subject of a message. Nil means SubjectPrefix + "." +
	// payload type. A subject that CheckSubject rejects poisons the message, as does a
	// panic of the function (with the panic as the reason).
	Subject func(m Outgoing) string
	// SubjectPrefix is the default subject's prefix (SubjectPrefixDefault).
	SubjectPrefix string
	// PublishTimeout bounds the wait for one publish's ack (PublishTimeoutDefault).
	PublishTimeout time.Duration
	// MaxAttempts is how many runs a relayed message gets (RelayAttemptsDefault).
	MaxAttempts int
	// MaxPending caps the publishes in flight, awaiting an ack (MaxPendingDefault).
	MaxPending int
	// Logger receives the relay's logs (slog.Default()).
	Logger *slog.Logger
}

func (c RelayConfig) withDefaults() RelayConfig {
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = SubjectPrefixDefault
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = PublishTimeoutDefault
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = RelayAttemptsDefault
	}
	if c.MaxPending == 0 {
		c.MaxPending = MaxPendingDefault
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c RelayConfig) validate() error {
	switch {
	case c.Subject == nil && CheckSubject(c.SubjectPrefix+".x") != nil:
		return &ConfigError{"RelayConfig.SubjectPrefix", c.SubjectPrefix, "must be a valid subject (dot-separated tokens, no whitespace or wildcards)"}
	case c.PublishTimeout < 0 || c.PublishTimeout > am.ConsumerTimeoutMax/2:
		return &ConfigError{"RelayConfig.PublishTimeout", c.PublishTimeout, "must be between 1ns and 30m"}
	case c.MaxAttempts < 1:
		return &ConfigError{"RelayConfig.MaxAttempts", c.MaxAttempts, "must be at least 1"}
	case c.MaxPending < 1:
		return &ConfigError{"RelayConfig.MaxPending", c.MaxPending, "must be at least 1"}
	}
	return nil
}

// InboxConfig configures an Inbox. Stream and Durable are required.
type InboxConfig struct {
	// Stream is the JetStream stream to consume (it must exist).
	Stream string
	// Durable is the durable consumer's name; it is created, or updated, by NewInbox.
	// Instances sharing it share the work.
	Durable string
	// FilterSubjects restricts the consumer to these subjects (all of the stream's when empty).
	FilterSubjects []string
	// DeliverNew makes a newly created durable start with the messages published after
	// its creation; by default it starts with the stream's first message. It does not
	// change an existing durable's position.
	DeliverNew bool
	// FetchBatch is how many messages one fetch takes (FetchBatchDefault), written in one transaction.
	FetchBatch int
	// FetchWait is how long an idle fetch waits (FetchWaitDefault).
	FetchWait time.Duration
	// AckWait is JetStream's redelivery timeout for an unacked message (AckWaitDefault).
	AckWait time.Duration
	// RetryDelay is the redelivery delay of a message whose write failed (RetryDelayDefault).
	RetryDelay time.Duration
	// MaxDeliveries is how many deliveries a message whose write keeps failing gets before
	// it is recorded in poisoned_messages (MaxDeliveriesDefault).
	MaxDeliveries int
	// DedupRetention is how long received message ids are kept (DedupRetentionDefault).
	// A redelivery or republish older than that would be taken in again.
	DedupRetention time.Duration
	// Extract returns the context a message is produced with, from its headers: set it
	// to continue the producer's trace, e.g. with OpenTelemetry,
	// otel.GetTextMapPropagator().Extract(ctx, propagation.HeaderCarrier(h)). Nil: ctx.
	// Headers come from whoever published: a panic here is logged and the message taken
	// in with ctx.
	Extract func(ctx context.Context, h nats.Header) context.Context
	// Now is the clock (time.Now).
	Now func() time.Time
	// Logger receives the inbox's logs (slog.Default()).
	Logger *slog.Logger
}

func (c InboxConfig) withDefaults() InboxConfig {
	if c.FetchBatch == 0 {
		c.FetchBatch = FetchBatchDefault
	}
	if c.FetchWait == 0 {
		c.FetchWait = FetchWaitDefault
	}
	if c.AckWait == 0 {
		c.AckWait = AckWaitDefault
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = RetryDelayDefault
	}
	if c.MaxDeliveries == 0 {
		c.MaxDeliveries = MaxDeliveriesDefault
	}
	if c.DedupRetention == 0 {
		c.DedupRetention = DedupRetentionDefault
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c InboxConfig) validate() error {
	switch {
	case !validName(c.Stream):
		return &ConfigError{"InboxConfig.Stream", c.Stream, "is required: the name of an existing stream"}
	case !validName(c.Durable):
		return &ConfigError{"InboxConfig.Durable", c.Durable, "is required: a consumer name without whitespace, dots or wildcards"}
	case len(InboxConsumerName(c.Durable)) > am.NameMaxLen:
		return &ConfigError{"InboxConfig.Durable", c.Durable, fmt.Sprintf("must be at most %d bytes (InboxConsumerName names its poisoned messages)", am.NameMaxLen-len(InboxConsumerName("")))}
	case c.FetchBatch < 1 || c.FetchBatch > 10_000:
		return &ConfigError{"InboxConfig.FetchBatch", c.FetchBatch, "must be between 1 and 10000"}
	case c.FetchWait < time.Millisecond:
		return &ConfigError{"InboxConfig.FetchWait", c.FetchWait, "must be at least 1ms"}
	case c.AckWait < time.Second:
		return &ConfigError{"InboxConfig.AckWait", c.AckWait, "must be at least 1s"}
	case c.RetryDelay < 0:
		return &ConfigError{"InboxConfig.RetryDelay", c.RetryDelay, "must not be negative"}
	case c.MaxDeliveries < 1:
		return &ConfigError{"InboxConfig.MaxDeliveries", c.MaxDeliveries, "must be at least 1"}
	case c.DedupRetention < time.Minute:
		return &ConfigError{"InboxConfig.DedupRetention", c.DedupRetention, "must be at least 1m (longer than any redelivery)"}
	}
	for i, s := range c.FilterSubjects {
		if s == "" || strings.ContainsAny(s, " \t\r\n") {
			return &ConfigError{fmt.Sprintf("InboxConfig.FilterSubjects[%d]", i), s, "must be a subject (wildcards allowed)"}
		}
	}
	return nil
}

// validName reports whether s can name a stream or a consumer: 1 to 255 bytes, no
// whitespace, control characters, dots or wildcards.
func validName(s string) bool {
	return s != "" && len(s) <= 255 && CheckSubject(s) == nil && !strings.ContainsAny(s, ".*>/\\")
}
