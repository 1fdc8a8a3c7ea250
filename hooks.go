package asyncmonolith

import (
	"context"
	"runtime/debug"
	"time"
)

// Hooks observe the plugin's work, for tracing, metrics and logs (see the otel
// sub-package). Every field is optional. Each hook's doc says which goroutine runs it:
// the producer's hooks run on the caller's, inside its write, and the others on a
// processor's, between batches; keep them all fast, and safe for concurrent use (several
// callers and processors run at once). A processor's hook that panics is logged and
// skipped (a BeforeConsume that returns nil, too): the message is still consumed.
type Hooks struct {
	// TraceContext returns the W3C trace id (32 hex) and span id (16 hex) to record on
	// messages produced with ctx, or "" for none. Ids of another form (length, upper case,
	// not hex) record none. It runs on the goroutine that produces (Produce, ProduceNow,
	// ProduceBatch, ProduceTx), when the message is built.
	TraceContext func(ctx context.Context) (traceID, spanID string)
	// Produced is called after rows were written in a transaction (which may still roll
	// back). It runs on the goroutine whose write wrote them: the caller of ProduceNow,
	// ProduceTx, ProduceBatch or Flush, or of the GORM write that flushed a session's
	// buffered messages; for a schedule's messages, the scheduled-message processor's.
	// The rows must not be modified or kept after it returns.
	Produced func(ctx context.Context, rows []ConsumerMessage)
	// BeforeConsume is called before a consumer runs; the context it returns is the
	// consumer's (for example carrying a span). It runs on the goroutine that then runs
	// the consumer: the runs of a batch are concurrent, so it is called concurrently.
	BeforeConsume func(ctx context.Context, m MessageInfo) context.Context
	// AfterConsume is called once for every run, with the context BeforeConsume returned:
	// after the batch committed its outcome, or, when the batch rolled back (the message
	// will run again), with an error saying so. It runs on the processor's goroutine that
	// records outcomes (ProcessBatch's caller's), not the consumer's.
	AfterConsume func(ctx context.Context, m MessageInfo, r Result)
	// ScheduleFired is called, on the scheduled-message processor's goroutine (or
	// FireSchedules' caller's), after a schedule's firing committed: its messages were
	// written and it was advanced to its next occurrence.
	ScheduleFired func(ctx context.Context, scheduleID, payloadType string)
	// ScheduleSkipped is called, where ScheduleFired would be, for a due schedule that
	// could not fire (its expression or zone no longer parses, or its payload type has no
	// consumer in this process): nothing was produced, and it is tried again a minute
	// later. err says why (it matches ErrInvalidSchedule or ErrNoConsumers).
	ScheduleSkipped func(ctx context.Context, scheduleID, payloadType string, err error)
}

// MessageInfo describes one consumer run, for hooks.
type MessageInfo struct {
	ID           string    // the message's id (ConsumerMessage.ID)
	InsertID     string    // its insert id: given with InsertID, or generated
	ConsumerType string    // the consumer that runs (WithName, ConsumerTyper or its Go type name)
	PayloadType  string    // the payload's stored type name
	Attempt      int       // 1 on the first run
	MaxAttempts  int       // the attempt after which a failure poisons the message
	Snoozes      int       // how many times the message was snoozed before this run
	CreatedAt    time.Time // when the message was produced
	Due          time.Time // when it became due (before this claim)
	TraceID      string    // as recorded by the producer, or ""
	SpanID       string    // as recorded by the producer, or ""
}

// Result is the committed outcome of one consumer run.
type Result struct {
	Err      error         // nil on success; a *SnoozeError (ErrSnoozed) when Snoozed
	Duration time.Duration // how long the consumer ran
	Poisoned bool          // the message moved to poisoned_messages
	Snoozed  bool          // the consumer snoozed the message: due again at RetryAt, no attempt used
	RetryAt  time.Time     // when a failed (not poisoned) or snoozed message is due again
}

// callHook runs a hook on one of the plugin's own goroutines (BeforeConsume, AfterConsume,
// ScheduleFired, ScheduleSkipped): a panic in it is an observer's bug, logged with its
// stack and recovered, so that it takes neither the processor nor the process down. It
// reports whether the hook returned. (The producer's hooks run on the caller's goroutine,
// inside its write, and are not wrapped: their panic is the caller's.)
func (p *Plugin) callHook(ctx context.Context, name string, fn func()) (returned bool) {
	defer func() {
		if v := recover(); v != nil {
			p.cfg.Logger.ErrorContext(ctx, "asyncmonolith: a hook panicked; it was skipped", "hook", name,
				"panic", v, "stack", string(debug.Stack()))
		}
	}()
	fn()
	return true
}

// beforeConsume runs Hooks.BeforeConsume and returns the context the run uses: the hook's,
// or ctx when the hook panicked or returned nil.
func (p *Plugin) beforeConsume(ctx context.Context, m MessageInfo) context.Context {
	var hc context.Context
	if !p.callHook(ctx, "BeforeConsume", func() { hc = p.cfg.Hooks.BeforeConsume(ctx, m) }) {
		return ctx
	}
	if hc == nil {
		p.cfg.Logger.ErrorContext(ctx, "asyncmonolith: a hook returned a nil context; the run uses its own", "hook", "BeforeConsume")
		return ctx
	}
	return hc
}
