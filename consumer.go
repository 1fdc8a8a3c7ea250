package asyncmonolith

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"time"

	"github.com/asyncmonolith/asyncmonolith/internal/dialect"
	"gorm.io/gorm"
)

// Consumer handles payloads of type T. Register binds it to the plugin; every payload of
// type T produced afterwards becomes one message for it. Return nil to complete the
// message; any error, panic or timeout makes it retry, then poison.
//
// Delivery is at least once: a consumer must tolerate running twice for one message.
// Database writes made through Message.Tx commit with the message's completion, so they
// happen exactly once.
type Consumer[T any] interface {
	Consume(ctx context.Context, m *Message[T]) error
}

// ConsumerFunc adapts a function to a Consumer.
type ConsumerFunc[T any] func(ctx context.Context, m *Message[T]) error

// Consume calls f.
func (f ConsumerFunc[T]) Consume(ctx context.Context, m *Message[T]) error { return f(ctx, m) }

// Message is one delivery of a payload to a consumer.
type Message[T any] struct {
	ID           string    // the consumer_messages row id
	InsertID     string    // the dedup key, shared by one Produce call's messages (generated: the first one's ID)
	ConsumerType string    // the consumer's stored name
	PayloadType  string    // the payload's stored name
	Attempt      int       // 1 on the first run
	MaxAttempts  int       // the run after which a failure poisons the message
	Snoozes      int       // how many times the message was snoozed (SnoozeFor), which uses no attempt
	CreatedAt    time.Time // when it was produced
	TraceID      string    // W3C trace id recorded at produce time, or ""
	SpanID       string    // W3C span id recorded at produce time, or ""
	Payload      T
	// Tx is a transaction of this message's own, begun at its first statement, in which
	// the processor deletes the message when Consume returns nil. Writes through it (and
	// messages produced on it) commit together with the completion, or roll back when the
	// consumer fails, times out or loses its lease. Do not Commit or Rollback it; nested
	// Transaction calls are savepoints. It is closed once the run ends.
	Tx *gorm.DB
}

// IsLastAttempt reports whether a failure of this run poisons the message.
func (m *Message[T]) IsLastAttempt() bool { return m.Attempt >= m.MaxAttempts }

// PayloadTyper lets a payload choose its stored type name. Without it the name is the Go
// type's name (without package). Pick a name once and keep it: stored rows refer to it.
// Declare the method on the value receiver: on the pointer receiver it names *T only, and
// T keeps its Go name.
type PayloadTyper interface{ PayloadType() string }

// ConsumerTyper lets a consumer choose its stored name. Without it the name is the Go
// type's name (without package).
type ConsumerTyper interface{ ConsumerType() string }

// ConsumerOption configures one registered consumer.
type ConsumerOption func(*consumerOptions)

type consumerOptions struct {
	attempts    int
	timeout     time.Duration
	name        string
	rail        string
	concurrency int
	limited     bool

	retry      RetryPolicy // WithRetryPolicy
	maxSnoozes int         // WithMaxSnoozes
}

// WithAttempts sets how many runs this consumer gives a message before it is poisoned,
// overriding Config.MaxAttempts.
func WithAttempts(n int) ConsumerOption { return func(o *consumerOptions) { o.attempts = n } }

// WithTimeout bounds one run of this consumer, overriding Config.ConsumerTimeout.
func WithTimeout(d time.Duration) ConsumerOption { return func(o *consumerOptions) { o.timeout = d } }

// WithName sets the consumer's stored name, overriding ConsumerTyper and the Go type name.
func WithName(name string) ConsumerOption { return func(o *consumerOptions) { o.name = name } }

// WithRail puts the consumer on a rail of Config.Rails: its messages are stored with that
// rail and fetched and run only by that rail's processors. Register fails with
// ErrInvalidOption when the plugin has no such rail. Without it (or with DefaultRail) the
// consumer is on the default rail.
func WithRail(name string) ConsumerOption { return func(o *consumerOptions) { o.rail = name } }

// WithConcurrency limits how many messages of this consumer run at once in this process,
// across all processors of its rail; 1 runs them one at a time, in due order (a message
// is claimed only when the one before it has ended). Messages over the limit stay pending,
// unclaimed, and do not hold up other consumers. n must be between 1 and
// ConsumerConcurrencyMax. Without it a consumer runs as many at once as its rail allows.
func WithConcurrency(n int) ConsumerOption {
	return func(o *consumerOptions) { o.concurrency, o.limited = n, true }
}

// registration is one consumer, erased to the payload's JSON.
type registration struct {
	consumerType string
	payloadType  string
	payloadGo    reflect.Type
	attempts     int           // 0: Config.MaxAttempts
	timeout      time.Duration // 0: Config.ConsumerTimeout
	rail         string        // DefaultRail or a key of Config.Rails
	limit        *limiter      // nil: no WithConcurrency
	retry        RetryPolicy   // nil: Config.RetryPolicy
	maxSnoozes   int           // 0: Config.MaxSnoozes
	run          func(ctx context.Context, env envelope) error
}

// envelope is what the processor hands a registration for one row.
type envelope struct {
	row         *ConsumerMessage
	attempt     int
	maxAttempts int
	tx          *gorm.DB
}

// Register binds consumer c to payloads of type T. It fails with ErrDuplicateConsumer when
// the consumer's name is taken, and with ErrInvalidName when a name is empty or longer than
// NameMaxLen, or when T's stored name is already used by another Go type.
func Register[T any](p *Plugin, c Consumer[T], opts ...ConsumerOption) error {
	var o consumerOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.attempts < 0 {
		return fmt.Errorf("%w: WithAttempts(%d): must be at least 1", ErrInvalidOption, o.attempts)
	}
	if o.timeout < 0 || o.timeout > ConsumerTimeoutMax {
		return fmt.Errorf("%w: WithTimeout(%s): must be between 1ns and 1h", ErrInvalidOption, o.timeout)
	}
	if o.limited && (o.concurrency < 1 || o.concurrency > ConsumerConcurrencyMax) {
		return fmt.Errorf("%w: WithConcurrency(%d): must be between 1 and %d", ErrInvalidOption, o.concurrency, ConsumerConcurrencyMax)
	}
	if !p.hasRail(o.rail) {
		return fmt.Errorf("%w: WithRail(%q): no such rail (add it to Config.Rails)", ErrInvalidOption, o.rail)
	}
	if o.maxSnoozes < 0 {
		return fmt.Errorf("%w: WithMaxSnoozes(%d): must be at least 1", ErrInvalidOption, o.maxSnoozes)
	}
	if err := retryOptionError(o.retry); err != nil {
		return err
	}
	if c == nil || nilThroughValueMethod(c, reflect.TypeFor[Consumer[T]]()) {
		return fmt.Errorf("%w: consumer is nil (or a nil pointer to a type whose Consume has a value receiver)", ErrInvalidOption)
	}
	goType := reflect.TypeFor[T]()
	payloadType, err := payloadTypeName(goType)
	if err != nil {
		return err
	}
	name := o.name
	if name == "" {
		name = typeName(c, reflect.TypeOf(c))
	}
	if err := checkName("consumer type", name); err != nil {
		return err
	}
	r := &registration{
		consumerType: name,
		payloadType:  payloadType,
		payloadGo:    goType,
		attempts:     o.attempts,
		timeout:      o.timeout,
		rail:         o.rail,
		retry:        o.retry,
		maxSnoozes:   o.maxSnoozes,
		run: func(ctx context.Context, env envelope) error {
			m := &Message[T]{
				ID:           env.row.ID,
				InsertID:     env.row.InsertID,
				ConsumerType: env.row.ConsumerType,
				PayloadType:  env.row.PayloadType,
				Attempt:      env.attempt,
				MaxAttempts:  env.maxAttempts,
				Snoozes:      env.row.Snoozes,
				CreatedAt:    time.UnixMilli(env.row.CreatedAt),
				Tx:           env.tx,
			}
			if env.row.TraceID != nil {
				m.TraceID = *env.row.TraceID
			}
			if env.row.SpanID != nil {
				m.SpanID = *env.row.SpanID
			}
			if err := json.Unmarshal([]byte(env.row.Payload), &m.Payload); err != nil {
				return fmt.Errorf("%w: %s into %s: %w", ErrDecodePayload, env.row.PayloadType, goType, err)
			}
			return c.Consume(ctx, m)
		},
	}
	if o.limited {
		r.limit = &limiter{limit: o.concurrency}
	}
	return p.registry.add(r)
}

// PayloadTypeOf returns the stored payload type name of payloads like v: its
// PayloadType() method, or its Go type name.
func PayloadTypeOf(v any) (string, error) { return payloadTypeName(reflect.TypeOf(v)) }

// payloadTypeName is the stored name of payloads of Go type t.
func payloadTypeName(t reflect.Type) (string, error) {
	if t == nil {
		return "", fmt.Errorf("%w: payload is nil", ErrInvalidPayload)
	}
	var name string
	if t.Implements(payloadTyperType) {
		name = zeroOf(t).Interface().(PayloadTyper).PayloadType()
	} else {
		name = t.Name()
		if t.Kind() == reflect.Pointer {
			name = t.Elem().Name()
		}
	}
	if err := checkName("payload type", name); err != nil {
		return "", fmt.Errorf("%w (Go type %s: name the type or implement PayloadType() string)", err, t)
	}
	return name, nil
}

var payloadTyperType = reflect.TypeFor[PayloadTyper]()

// zeroOf is a value of type t to call a naming method on: the zero value, or for a
// pointer type a pointer to a zero value, so that a method declared on the value receiver
// is never called through a nil pointer (which panics).
func zeroOf(t reflect.Type) reflect.Value {
	if t.Kind() == reflect.Pointer {
		return reflect.New(t.Elem())
	}
	return reflect.Zero(t)
}

// nilThroughValueMethod reports whether v is a nil pointer whose methods of iface are
// declared on the value receiver: calling any of them panics.
func nilThroughValueMethod(v any, iface reflect.Type) bool {
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil() && rv.Type().Elem().Implements(iface)
}

// typeName is the stored name of consumer c.
func typeName(c any, t reflect.Type) string {
	if ct, ok := c.(ConsumerTyper); ok {
		if nilThroughValueMethod(c, reflect.TypeFor[ConsumerTyper]()) {
			return zeroOf(t).Interface().(ConsumerTyper).ConsumerType()
		}
		return ct.ConsumerType()
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Name()
}

// checkName validates a name stored in a varchar column: 1 to NameMaxLen bytes of valid
// UTF-8 without NUL, which every database stores alike (PostgreSQL refuses NUL and
// invalid UTF-8, MySQL invalid UTF-8; SQLite would store either).
func checkName(what, name string) error {
	if name == "" || len(name) > NameMaxLen {
		return fmt.Errorf("%w: %s %.40q must be 1 to %d bytes, got %d", ErrInvalidName, what, name, NameMaxLen, len(name))
	}
	if !dialect.ValidText(name) {
		return fmt.Errorf("%w: %s %.40q must be valid UTF-8 without NUL bytes", ErrInvalidName, what, name)
	}
	return nil
}
