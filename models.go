package asyncmonolith

import "time"

// Times in the three tables are Unix milliseconds (UTC), set by the application's clock
// (Config.Clock), never by the database's: the same rule holds on every database.
//
// Every column is named in its tag (and every table by TableName), because the plugin's SQL
// names them itself: whatever NamingStrategy the application's *gorm.DB uses (NoLowerCase,
// TablePrefix, SingularTable), the tables are the same.

// ConsumerMessage is a row of consumer_messages: one delivery of a payload to one consumer,
// pending or running. Produce writes one row per consumer of the payload type; a processor
// claims it for a lease, and deletes it when the consumer succeeds.
type ConsumerMessage struct {
	ID             string  `gorm:"column:id;primaryKey;size:64;index:idx_consumer_messages_rail_fetch,priority:4"`
	CreatedAt      int64   `gorm:"column:created_at;not null;autoCreateTime:false;index:idx_consumer_messages_rail_fetch,priority:3"`
	AvailableAfter int64   `gorm:"column:available_after;not null;index:idx_consumer_messages_rail_fetch,priority:2"`
	Attempts       int     `gorm:"column:attempts;not null;default:0"`
	ConsumerType   string  `gorm:"column:consumer_type;size:255;not null;uniqueIndex:ux_consumer_messages_pending_insert_id,priority:2"`
	PayloadType    string  `gorm:"column:payload_type;size:255;not null"`
	Payload        string  `gorm:"column:payload;not null"`
	InsertID       string  `gorm:"column:insert_id;size:255;not null;uniqueIndex:ux_consumer_messages_pending_insert_id,priority:1"`
	TraceID        *string `gorm:"column:trace_id;size:32"`
	SpanID         *string `gorm:"column:span_id;size:16"`
	LastError      *string `gorm:"column:last_error"`
	// Pending is true while the message waits and NULL while a processor has claimed it
	// (a claim also moves AvailableAfter to the end of its lease). The unique index on
	// (insert_id, consumer_type, pending) so allows one pending message per insert id
	// beside any running ones: every database treats NULLs as distinct in a unique index.
	Pending *bool `gorm:"column:pending;default:true;check:chk_consumer_messages_pending,pending IS NULL OR pending;uniqueIndex:ux_consumer_messages_pending_insert_id,priority:3"`
	// Rail is the rail whose processors fetch the message ("" is the default rail): the
	// rail its consumer was registered on (WithRail) when it was produced. The fetch index
	// leads with it, so each rail's processors read their own range of it.
	Rail string `gorm:"column:rail;size:64;not null;default:'';index:idx_consumer_messages_rail_fetch,priority:1"`

	// Snoozes counts the times a consumer snoozed the message (SnoozeFor), which use no attempt.
	Snoozes int `gorm:"column:snoozes;not null;default:0"`
}

// TableName is consumer_messages.
func (ConsumerMessage) TableName() string { return "consumer_messages" }

// Due returns AvailableAfter as a time.
func (m ConsumerMessage) Due() time.Time { return time.UnixMilli(m.AvailableAfter) }

// PoisonedMessage is a row of poisoned_messages: a message that failed on its last
// attempt. It keeps the original id, created_at, payload and insert id, and the error.
type PoisonedMessage struct {
	ID             string  `gorm:"column:id;primaryKey;size:64"`
	CreatedAt      int64   `gorm:"column:created_at;not null;autoCreateTime:false"`
	AvailableAfter int64   `gorm:"column:available_after;not null"`
	Attempts       int     `gorm:"column:attempts;not null;default:0"`
	ConsumerType   string  `gorm:"column:consumer_type;size:255;not null;index:idx_poisoned_messages_consumer_type"`
	PayloadType    string  `gorm:"column:payload_type;size:255;not null"`
	Payload        string  `gorm:"column:payload;not null"`
	InsertID       string  `gorm:"column:insert_id;size:255;not null"`
	TraceID        *string `gorm:"column:trace_id;size:32"`
	SpanID         *string `gorm:"column:span_id;size:16"`
	LastError      string  `gorm:"column:last_error;not null"`
	PoisonedAt     int64   `gorm:"column:poisoned_at;not null;index:idx_poisoned_messages_poisoned_at"`
	// Rail is the message's rail, kept so that RequeuePoisoned puts it back on it.
	Rail string `gorm:"column:rail;size:64;not null;default:''"`
}

// TableName is poisoned_messages.
func (PoisonedMessage) TableName() string { return "poisoned_messages" }

// ScheduledMessage is a row of scheduled_messages: a payload produced on a cron schedule.
// Its columns keep AsyncMonolith's names and spelling (chron_expression, chron_timezone).
type ScheduledMessage struct {
	// ID is the schedule's id, returned by Schedule.
	ID string `gorm:"column:id;primaryKey;size:64"`
	// Tag is the label given with the Tag option, or nil.
	Tag *string `gorm:"column:tag;size:255;index:idx_scheduled_messages_tag"`
	// AvailableAfter is the next occurrence (Unix milliseconds).
	AvailableAfter int64 `gorm:"column:available_after;not null;index:idx_scheduled_messages_available_after"`
	// ChronExpression is the cron expression, as given without surrounding spaces.
	ChronExpression string `gorm:"column:chron_expression;size:255;not null"`
	// ChronTimezone is the IANA zone the expression is evaluated in ("UTC" by default).
	ChronTimezone string `gorm:"column:chron_timezone;size:64;not null"`
	// PayloadType is the payload's stored type name, and Payload its JSON.
	PayloadType string `gorm:"column:payload_type;size:255;not null"`
	Payload     string `gorm:"column:payload;not null"`
}

// TableName is scheduled_messages.
func (ScheduledMessage) TableName() string { return "scheduled_messages" }

// models lists the tables Migrate creates, in creation order.
func models() []any { return []any{&ConsumerMessage{}, &PoisonedMessage{}, &ScheduledMessage{}} }
