package asyncmonolith

import (
	"errors"
	"fmt"

	"github.com/asyncmonolith/asyncmonolith/internal/dialect"
)

// Sentinel errors. Every error the library returns wraps one of these (or a
// database error), so callers can branch with errors.Is.
var (
	// ErrInvalidConfig reports a Config field out of range; the error names the field.
	ErrInvalidConfig = errors.New("asyncmonolith: invalid config")
	// ErrNotRegistered reports that the *gorm.DB has no asyncmonolith plugin: call db.Use(plugin) first.
	ErrNotRegistered = errors.New("asyncmonolith: plugin not registered on this *gorm.DB (call db.Use)")
	// ErrNoConsumers reports a payload type that no registered consumer takes.
	ErrNoConsumers = errors.New("asyncmonolith: no consumer registered for payload type")
	// ErrDuplicateConsumer reports two consumers registered under one consumer type name.
	ErrDuplicateConsumer = errors.New("asyncmonolith: consumer type already registered")
	// ErrInvalidName reports an empty or over-long payload type, consumer type or insert id.
	ErrInvalidName = errors.New("asyncmonolith: invalid name")
	// ErrInvalidPayload reports a payload that cannot be encoded to JSON.
	ErrInvalidPayload = errors.New("asyncmonolith: invalid payload")
	// ErrInvalidOption reports a produce or consumer option that does not apply.
	ErrInvalidOption = errors.New("asyncmonolith: invalid option")
	// ErrRetryable marks an error the database raised for contention (a deadlock or
	// lock-wait timeout): the caller's transaction was aborted and can be retried as a whole.
	ErrRetryable = errors.New("asyncmonolith: transient database conflict, retry the transaction")
	// ErrTransactionRequired reports a call that must run inside a transaction.
	ErrTransactionRequired = errors.New("asyncmonolith: a transaction is required")
	// ErrConcurrencyUnsupported reports more than one processor on a database without row locks (SQLite).
	ErrConcurrencyUnsupported = errors.New("asyncmonolith: concurrent processors need row locks, which this database lacks")
	// ErrAlreadyInitialized is returned by db.Use (Initialize) for a Plugin already
	// registered on another *gorm.DB: create one Plugin per database.
	ErrAlreadyInitialized = errors.New("asyncmonolith: plugin already initialized on a *gorm.DB")
	// ErrAlreadyStarted is returned by Start on a plugin that is running.
	ErrAlreadyStarted = errors.New("asyncmonolith: already started")
	// ErrNotStarted is returned by Stop on a plugin that is not running.
	ErrNotStarted = errors.New("asyncmonolith: not started")
	// ErrUnknownConsumer marks a stored message whose consumer type is not registered in this process.
	ErrUnknownConsumer = errors.New("asyncmonolith: unknown consumer type")
	// ErrDecodePayload marks a stored payload that does not decode into the consumer's payload type.
	ErrDecodePayload = errors.New("asyncmonolith: payload does not decode")
	// ErrPermanent marks a consumer error that no retry can fix (a message the consumer
	// can never handle): wrap it (fmt.Errorf("...: %w", ErrPermanent)) and the message is
	// poisoned at once with the error as its reason, and the consumer's breaker does not
	// count the run.
	ErrPermanent = errors.New("asyncmonolith: permanent failure, not retried")
	// ErrConsumerTimeout marks a consumer run that outlived its timeout.
	ErrConsumerTimeout = errors.New("asyncmonolith: consumer timed out")
	// ErrConsumerPanic marks a consumer run that panicked; see PanicError for the value and stack.
	ErrConsumerPanic = errors.New("asyncmonolith: consumer panicked")
	// ErrTxManaged is returned when a consumer tries to commit or roll back Message.Tx itself.
	ErrTxManaged = errors.New("asyncmonolith: Message.Tx is committed by the processor, not by the consumer")
	// ErrConsumerAbandoned is returned by statements a timed-out consumer still sends through Message.Tx.
	ErrConsumerAbandoned = errors.New("asyncmonolith: consumer was abandoned after its timeout; Message.Tx is closed")
	// ErrLeaseLost marks a run whose completion was refused: its message's lease had ended
	// and another processor had claimed it (this process was paused, or its clock ran
	// behind). The run's Message.Tx writes were rolled back; the other run decides.
	ErrLeaseLost = errors.New("asyncmonolith: the message's lease ended before its run completed; completion refused")
	// ErrInvalidSchedule reports an invalid cron expression or time zone.
	ErrInvalidSchedule = errors.New("asyncmonolith: invalid schedule")
	// ErrScheduleNotFound reports a schedule id that does not exist.
	ErrScheduleNotFound = errors.New("asyncmonolith: schedule not found")
	// ErrMessageNotFound reports a message id that does not exist.
	ErrMessageNotFound = errors.New("asyncmonolith: message not found")
	// ErrRequeueConflict reports poisoned messages left poisoned because their insert id is
	// pending again for their consumer.
	ErrRequeueConflict = errors.New("asyncmonolith: insert id is pending again; message left poisoned")
	// ErrMigrateLockTimeout is returned by Migrate when another instance's Migrate of the
	// same database (MySQL/MariaDB) held its lock for longer than two minutes. Migrate calls
	// of instances starting at once run one after another; PostgreSQL waits as long as the
	// context allows.
	ErrMigrateLockTimeout = dialect.ErrMigrateLockTimeout
)

// ConfigError names the Config field that failed validation. It matches ErrInvalidConfig.
type ConfigError struct {
	Field  string // the Config field, e.g. "MaxAttempts"
	Value  any    // the rejected value
	Reason string // what a valid value looks like
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("asyncmonolith: invalid config: %s = %v: %s", e.Field, e.Value, e.Reason)
}

// Is reports whether target is ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// PanicError carries what a consumer panicked with and the stack at the panic. It matches ErrConsumerPanic.
type PanicError struct {
	Value any    // the value passed to panic
	Stack []byte // the goroutine's stack when it panicked
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("asyncmonolith: consumer panicked: %v", e.Value)
}

// Is reports whether target is ErrConsumerPanic.
func (e *PanicError) Is(target error) bool { return target == ErrConsumerPanic }
