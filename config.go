package asyncmonolith

import (
	"log/slog"
	"reflect"
	"time"

	"github.com/asyncmonolith/asyncmonolith/internal/dialect"
)

// Documented defaults: a zero Config field takes these values.
const (
	// MaxAttemptsDefault is how many times a message runs (the first run included) before it is poisoned.
	MaxAttemptsDefault = 5
	// AttemptDelayDefault is how long a failed message waits before its next attempt.
	AttemptDelayDefault = 10 * time.Second
	// ProcessorMinDelayDefault is the pause after a full batch.
	ProcessorMinDelayDefault = 10 * time.Millisecond
	// ProcessorMaxDelayDefault is the pause after a short (or empty) batch.
	ProcessorMaxDelayDefault = time.Second
	// ProcessorBatchSizeDefault is how many messages one fetch locks; a batch of 100 was
	// measured 35–70× faster per message than one message per transaction.
	ProcessorBatchSizeDefault = 100
	// ConsumerProcessorsDefault is how many consumer processors one plugin runs.
	ConsumerProcessorsDefault = 1
	// ConsumerConcurrencyDefault is how many consumers one processor runs at once. Consumers
	// that wait (an HTTP call, an e-mail API) hold no connection while they wait, so the
	// default is generous: 200 consumers waiting 50 ms each keep 4,000 messages/s flowing.
	ConsumerConcurrencyDefault = 200
	// ConsumerTimeoutDefault bounds one consumer run when the consumer sets no timeout.
	ConsumerTimeoutDefault = 10 * time.Second
	// ScheduleProcessorsDefault is how many scheduled-message processors one plugin runs.
	ScheduleProcessorsDefault = 1
	// ScheduleBatchSizeDefault is how many due schedules one fetch locks and fires.
	ScheduleBatchSizeDefault = 100
	// SchedulePollIntervalDefault is the pause between polls for due schedules.
	SchedulePollIntervalDefault = time.Second
	// BreakerFailuresDefault is how many failed runs in a row pause a consumer.
	BreakerFailuresDefault = 20
	// BreakerCooldownDefault is how long a consumer's first pause lasts.
	BreakerCooldownDefault = 10 * time.Second
	// BreakerMaxCooldownDefault caps a consumer's pause as failed probes double it.
	BreakerMaxCooldownDefault = 5 * time.Minute
	// MaxMessageTxsDefault is how many Message.Tx transactions one plugin keeps open at
	// once: each holds a database connection, and a server has a few hundred at most.
	MaxMessageTxsDefault = 10
	// LeaseMarginDefault is how much longer than its longest possible run a claim holds
	// its messages, for the completion to land.
	LeaseMarginDefault = 10 * time.Second
	// AbandonGraceDefault is how long a consumer that ignores its cancelled context is awaited before it is abandoned.
	AbandonGraceDefault = time.Second
)

// Limits enforced by validation.
const (
	// ProcessorBatchSizeMax is the largest ProcessorBatchSize accepted.
	ProcessorBatchSizeMax = 10_000
	// ConsumerTimeoutMax is the longest consumer timeout accepted: a message stays leased
	// for its consumer's timeout (and AbandonGrace and LeaseMargin) after a process that
	// ran it died, and a run using Message.Tx holds a database connection all along.
	ConsumerTimeoutMax = time.Hour
	// ConsumerConcurrencyMax is the largest ConsumerConcurrency accepted.
	ConsumerConcurrencyMax = 10_000
	// NameMaxLen is the longest payload type, consumer type or insert id, in bytes (the indexed columns are varchar(255)).
	NameMaxLen = 255
)

// Config configures the plugin. Every field is optional: the zero value means the
// documented default (the *Default constants). Negative values are invalid.
type Config struct {
	// MaxAttempts is how many runs (the first included) a message gets before it moves to
	// poisoned_messages. A consumer can override it with WithAttempts.
	MaxAttempts int
	// AttemptDelay is how long a failed message waits before it is due again, unless
	// RetryPolicy (or the consumer's WithRetryPolicy) is set; and the delay used when a
	// retry policy panics.
	AttemptDelay time.Duration
	// RetryPolicy chooses each failed message's delay instead of AttemptDelay: for example
	// ExponentialBackoff{} (10s, 20s, 40s, … up to 1h, with jitter). A consumer can override it
	// with WithRetryPolicy. Nil: AttemptDelay every time.
	RetryPolicy RetryPolicy
	// MaxSnoozes is how many times a message may be snoozed (SnoozeFor, SnoozeUntil) before
	// a snooze counts as a failed attempt. A consumer can override it with WithMaxSnoozes.
	MaxSnoozes int
	// MaxSnoozeDuration is the longest snooze; a longer one is shortened to it.
	MaxSnoozeDuration time.Duration
	// ProcessorMinDelay is the pause between polls after a full batch.
	ProcessorMinDelay time.Duration
	// ProcessorMaxDelay is the pause between polls after a short batch. A commit of
	// produced messages in this process wakes the processors before it runs out.
	ProcessorMaxDelay time.Duration
	// ProcessorBatchSize is how many due messages one fetch locks and runs.
	ProcessorBatchSize int
	// ConsumerProcessors is how many consumer processors run, each on its own connection.
	// More than one needs row locks: on SQLite, Start refuses it.
	ConsumerProcessors int
	// ConsumerConcurrency is how many consumers one processor runs at once (1 runs them one
	// after another). A consumer holds a database connection only while its Message.Tx has
	// a transaction open.
	ConsumerConcurrency int
	// MaxMessageTxs is how many consumers may have Message.Tx open at once (each holds a
	// connection from its first statement until its run ends); others wait at their first
	// statement, holding no connection. Keep it below the pool's SetMaxOpenConns.
	MaxMessageTxs int
	// ConsumerTimeout bounds one consumer run, through its context, unless the
	// consumer was registered WithTimeout.
	ConsumerTimeout time.Duration
	// AbandonGrace is how long a consumer whose context is done is still awaited. A consumer
	// that ignores its context longer is abandoned: its run counts as a timeout and its
	// Message.Tx is closed, so the processor moves on.
	AbandonGrace time.Duration
	// LeaseMargin is added to a message's consumer timeout and AbandonGrace to make its
	// lease: how long a claimed message stays invisible to other processors. If
	// the process dies, its running messages are due again when their lease ends, without
	// an attempt counted. A completion that comes after its lease ended (a process that was
	// paused) is refused (ErrLeaseLost) and its Message.Tx writes are rolled back.
	LeaseMargin time.Duration
	// Logger receives the plugin's logs. Nil means slog.Default().
	Logger *slog.Logger
	// ScheduleProcessors is how many scheduled-message processors run (SQLite: 1).
	ScheduleProcessors int
	// ScheduleBatchSize is how many due schedules one fetch locks and fires.
	ScheduleBatchSize int
	// SchedulePollInterval is the pause between polls for due schedules (±20 % jitter); a
	// processor also wakes for the next due time of the schedules it fired.
	SchedulePollInterval time.Duration
	// BreakerFailures is how many failed runs in a row (timeouts and panics included;
	// undecodable payloads excluded) pause a consumer: its due messages are set aside,
	// without counting an attempt, for BreakerCooldown; then one run probes it. A success
	// resumes it; a failure pauses it again for twice as long, up to BreakerMaxCooldown.
	// This keeps a consumer whose dependency is down from poisoning its whole backlog and
	// from taking the processors' time from healthy consumers.
	BreakerFailures int
	// BreakerCooldown is how long a consumer's first pause lasts.
	BreakerCooldown time.Duration
	// BreakerMaxCooldown caps the pause of a consumer whose probes keep failing.
	BreakerMaxCooldown time.Duration
	// DisableBreaker turns pausing off: a failing consumer's messages use up their attempts
	// and are poisoned at full speed.
	DisableBreaker bool
	// Hooks observe production and consumption (tracing, metrics).
	Hooks Hooks
	// Clock is the time source of due times and of the engine's waits on consumers
	// (timeouts, AbandonGrace, the breaker's cooldowns): see Clock. Nil means
	// SystemClock(). Tests plug in asyncmonolithtest.Clock. A nil pointer (a nil
	// *asyncmonolithtest.Clock) is refused with a *ConfigError.
	Clock Clock

	// PollOnly turns commit notifications off: processors find messages committed by other
	// processes by polling alone, every ProcessorMaxDelay at most (a commit in this process
	// still wakes them at once), and no connection is held for a listener. Use it behind a
	// pooler that cannot relay LISTEN (PgBouncer in transaction mode) when no ListenDSN can
	// reach the server. The default (false) listens where the database can notify:
	// PostgreSQL (LISTEN, one connection) and SQLite (a data_version watcher, one connection).
	PollOnly bool
	// Rails are processor pools of their own (besides the default rail, which the fields
	// above configure), keyed by name: a consumer registered WithRail(name) is fetched and
	// run only by that rail's processors, so a slow consumer on one rail cannot hold up
	// consumers on another. Nil: one rail, the default one. See RailConfig.
	Rails map[string]RailConfig

	// ListenDSN (PostgreSQL only) is a pgx DSN straight to the server, for the notification
	// listener: it then holds a connection of its own, outside the pool, instead of one of
	// the pool's. Set it when the pool goes through a pooler in transaction mode
	// (PgBouncer), whose connections cannot LISTEN. Empty (the default): the listener takes
	// one connection of the pool, and none with a pool of one (SetMaxOpenConns(1)), where it
	// would starve the application.
	ListenDSN string
}

// withDefaults returns c with zero fields replaced by their defaults.
func (c Config) withDefaults() Config {
	if c.MaxAttempts == 0 {
		c.MaxAttempts = MaxAttemptsDefault
	}
	if c.AttemptDelay == 0 {
		c.AttemptDelay = AttemptDelayDefault
	}
	if c.MaxSnoozes == 0 {
		c.MaxSnoozes = MaxSnoozesDefault
	}
	if c.MaxSnoozeDuration == 0 {
		c.MaxSnoozeDuration = MaxSnoozeDurationDefault
	}
	if c.ProcessorMinDelay == 0 {
		c.ProcessorMinDelay = ProcessorMinDelayDefault
	}
	if c.ProcessorMaxDelay == 0 {
		c.ProcessorMaxDelay = ProcessorMaxDelayDefault
	}
	if c.ProcessorBatchSize == 0 {
		c.ProcessorBatchSize = ProcessorBatchSizeDefault
	}
	if c.ConsumerProcessors == 0 {
		c.ConsumerProcessors = ConsumerProcessorsDefault
	}
	if c.ConsumerConcurrency == 0 {
		c.ConsumerConcurrency = ConsumerConcurrencyDefault
	}
	if c.MaxMessageTxs == 0 {
		c.MaxMessageTxs = MaxMessageTxsDefault
	}
	if c.ConsumerTimeout == 0 {
		c.ConsumerTimeout = ConsumerTimeoutDefault
	}
	if c.ScheduleProcessors == 0 {
		c.ScheduleProcessors = ScheduleProcessorsDefault
	}
	if c.ScheduleBatchSize == 0 {
		c.ScheduleBatchSize = ScheduleBatchSizeDefault
	}
	if c.SchedulePollInterval == 0 {
		c.SchedulePollInterval = SchedulePollIntervalDefault
	}
	if c.AbandonGrace == 0 {
		c.AbandonGrace = AbandonGraceDefault
	}
	if c.LeaseMargin == 0 {
		c.LeaseMargin = LeaseMarginDefault
	}
	if c.BreakerFailures == 0 {
		c.BreakerFailures = BreakerFailuresDefault
	}
	if c.BreakerCooldown == 0 {
		c.BreakerCooldown = BreakerCooldownDefault
	}
	if c.BreakerMaxCooldown == 0 {
		c.BreakerMaxCooldown = max(BreakerMaxCooldownDefault, c.BreakerCooldown)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = SystemClock()
	}
	if c.Rails != nil {
		rails := make(map[string]RailConfig, len(c.Rails))
		for name, rc := range c.Rails {
			rails[name] = rc.withDefaults()
		}
		c.Rails = rails
	}
	return c
}

// validate checks a Config after defaults were applied.
func (c Config) validate() error {
	switch {
	case c.MaxAttempts < 1:
		return &ConfigError{"MaxAttempts", c.MaxAttempts, "must be at least 1 (0 means 5)"}
	case c.AttemptDelay < 0:
		return &ConfigError{"AttemptDelay", c.AttemptDelay, "must not be negative"}
	case c.MaxSnoozes < 1:
		return &ConfigError{"MaxSnoozes", c.MaxSnoozes, "must be at least 1 (0 means 100)"}
	case c.MaxSnoozeDuration < 0 || c.MaxSnoozeDuration > RetryDelayMax:
		return &ConfigError{"MaxSnoozeDuration", c.MaxSnoozeDuration, "must be between 0 (default 24h) and " + RetryDelayMax.String()}
	case c.ProcessorMinDelay < 0:
		return &ConfigError{"ProcessorMinDelay", c.ProcessorMinDelay, "must not be negative"}
	case c.ProcessorMaxDelay < 0:
		return &ConfigError{"ProcessorMaxDelay", c.ProcessorMaxDelay, "must not be negative"}
	case c.ProcessorMinDelay > c.ProcessorMaxDelay:
		return &ConfigError{"ProcessorMinDelay", c.ProcessorMinDelay, "must not exceed ProcessorMaxDelay (" + c.ProcessorMaxDelay.String() + ")"}
	case c.ProcessorBatchSize < 1 || c.ProcessorBatchSize > ProcessorBatchSizeMax:
		return &ConfigError{"ProcessorBatchSize", c.ProcessorBatchSize, "must be between 1 and 10000"}
	case c.ConsumerProcessors < 1 || c.ConsumerProcessors > 1000:
		return &ConfigError{"ConsumerProcessors", c.ConsumerProcessors, "must be between 1 and 1000"}
	case c.ConsumerConcurrency < 1 || c.ConsumerConcurrency > ConsumerConcurrencyMax:
		return &ConfigError{"ConsumerConcurrency", c.ConsumerConcurrency, "must be between 1 and 10000 (0 means 200)"}
	case c.MaxMessageTxs < 1 || c.MaxMessageTxs > ConsumerConcurrencyMax:
		return &ConfigError{"MaxMessageTxs", c.MaxMessageTxs, "must be between 1 and 10000 (0 means 10)"}
	case c.ConsumerTimeout < 0 || c.ConsumerTimeout > ConsumerTimeoutMax:
		return &ConfigError{"ConsumerTimeout", c.ConsumerTimeout, "must be between 0 (default 10s) and 1h"}
	case c.ScheduleProcessors < 1 || c.ScheduleProcessors > 100:
		return &ConfigError{"ScheduleProcessors", c.ScheduleProcessors, "must be between 1 and 100"}
	case c.ScheduleBatchSize < 1 || c.ScheduleBatchSize > ProcessorBatchSizeMax:
		return &ConfigError{"ScheduleBatchSize", c.ScheduleBatchSize, "must be between 1 and 10000"}
	case c.SchedulePollInterval < 0:
		return &ConfigError{"SchedulePollInterval", c.SchedulePollInterval, "must not be negative"}
	case c.AbandonGrace < 0:
		return &ConfigError{"AbandonGrace", c.AbandonGrace, "must not be negative"}
	case c.LeaseMargin < 0:
		return &ConfigError{"LeaseMargin", c.LeaseMargin, "must not be negative"}
	case c.BreakerFailures < 1:
		return &ConfigError{"BreakerFailures", c.BreakerFailures, "must be at least 1 (0 means 20; DisableBreaker turns pausing off)"}
	case c.BreakerCooldown < 0:
		return &ConfigError{"BreakerCooldown", c.BreakerCooldown, "must not be negative"}
	case c.BreakerMaxCooldown < c.BreakerCooldown:
		return &ConfigError{"BreakerMaxCooldown", c.BreakerMaxCooldown, "must not be shorter than BreakerCooldown (" + c.BreakerCooldown.String() + ")"}
	case c.PollOnly && c.ListenDSN != "":
		return &ConfigError{"ListenDSN", redactedDSN, "must be empty with PollOnly (a poll-only plugin does not listen)"}
	case nilPointer(c.Clock):
		return &ConfigError{"Clock", c.Clock, "is a nil pointer (leave Clock nil for the system clock)"}
	}
	if err := c.validateRails(); err != nil {
		return err
	}
	return retryPolicyError(c.RetryPolicy)
}

// nilPointer reports whether v holds a nil pointer (a typed nil in an interface).
func nilPointer(v any) bool {
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}

// redactedDSN stands for a DSN in errors: it may hold a password.
const redactedDSN = "(redacted)"

// validateFor checks the fields whose validity depends on the database.
func (c Config) validateFor(d dialect.Dialect) error {
	if c.ListenDSN == "" {
		return nil
	}
	if err := d.CheckListenDSN(c.ListenDSN); err != nil {
		return &ConfigError{"ListenDSN", redactedDSN, err.Error()}
	}
	return nil
}
