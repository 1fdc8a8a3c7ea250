package asyncmonolith

import (
	"context"
	"time"
)

// Hooks observe the plugin's work, for tracing, metrics and logs (see the otel
// sub-package). Every field is optional; hooks run on the processor's goroutine, so keep
// them fast.
type Hooks struct {
	// TraceContext returns the W3C trace id (32 hex) and span id (16 hex) to record on
	// messages produced with ctx, or "" for none. Ids of another form (length, upper case,
	// not hex) record none.
	TraceContext func(ctx context.Context) (traceID, spanID string)
	// Produced is called after rows were written in a transaction (which may still roll back).
	Produced func(ctx context.Context, rows []ConsumerMessage)
	// BeforeConsume is called before a consumer runs; the context it returns is the
	// consumer's (for example carrying a span).
	BeforeConsume func(ctx context.Context, m MessageInfo) context.Context
	// AfterConsume is called once for every run, with the context BeforeConsume returned:
	// after the batch committed its outcome, or, when the batch rolled back (the message
	// will run again), with an error saying so.
	AfterConsume func(ctx context.Context, m MessageInfo, r Result)
	// ScheduleFired is called after a schedule's firing committed.
	ScheduleFired func(ctx context.Context, scheduleID, payloadType string)
}

// MessageInfo describes one consumer run, for hooks.
type MessageInfo struct {
	ID           string
	InsertID     string
	ConsumerType string
	PayloadType  string
	Attempt      int // 1 on the first run
	MaxAttempts  int
	Snoozes      int // how many times the message was snoozed before this run
	CreatedAt    time.Time
	Due          time.Time
	TraceID      string // as recorded by the producer, or ""
	SpanID       string
}

// Result is the committed outcome of one consumer run.
type Result struct {
	Err      error         // nil on success; a *SnoozeError (ErrSnoozed) when Snoozed
	Duration time.Duration // how long the consumer ran
	Poisoned bool          // the message moved to poisoned_messages
	Snoozed  bool          // the consumer snoozed the message: due again at RetryAt, no attempt used
	RetryAt  time.Time     // when a failed (not poisoned) or snoozed message is due again
}
