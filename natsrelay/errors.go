package natsrelay

import (
	"errors"
	"fmt"
)

// Errors of the relay and the inbox, for errors.Is.
var (
	// ErrInvalidConfig reports a config field out of range; see ConfigError for the field.
	ErrInvalidConfig = errors.New("natsrelay: invalid config")
	// ErrInvalidSubject reports a subject that NATS would reject or misroute (empty, with
	// whitespace or control characters, an empty token, a wildcard, invalid UTF-8, a
	// reserved $-subject or _INBOX. reply subject). The message is poisoned at once (it
	// wraps asyncmonolith.ErrPermanent).
	ErrInvalidSubject = errors.New("natsrelay: invalid subject")
	// ErrPayloadTooLarge reports a message larger than the server's max_payload. The
	// message is poisoned at once (it wraps asyncmonolith.ErrPermanent).
	ErrPayloadTooLarge = errors.New("natsrelay: message larger than the server's max payload")
	// ErrNoStream reports a subject that no JetStream stream captures. The message is
	// poisoned at once (create the stream, then requeue it with RequeuePoisoned).
	ErrNoStream = errors.New("natsrelay: no stream captures the subject")
	// ErrUnavailable reports a JetStream that did not acknowledge a publish (down,
	// disconnected, timed out): the message is retried and the relay's breaker pauses it
	// while JetStream stays down.
	ErrUnavailable = errors.New("natsrelay: JetStream did not acknowledge the publish")
	// ErrAlreadyStarted is returned by Inbox.Start on an inbox that is running.
	ErrAlreadyStarted = errors.New("natsrelay: inbox already started")
	// ErrNotStarted is returned by Inbox.Stop on an inbox that is not running.
	ErrNotStarted = errors.New("natsrelay: inbox not started")
	// ErrDuplicateType is returned by Accept for a payload type accepted already.
	ErrDuplicateType = errors.New("natsrelay: payload type accepted already")
)

// ConfigError names the config field that failed validation. It matches ErrInvalidConfig.
type ConfigError struct {
	Field  string // e.g. "InboxConfig.Stream"
	Value  any    // the rejected value
	Reason string // what a valid value looks like
}

// Error names the field, the rejected value and what a valid value looks like.
func (e *ConfigError) Error() string {
	return fmt.Sprintf("natsrelay: invalid config: %s = %v: %s", e.Field, e.Value, e.Reason)
}

// Is reports whether target is ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }
