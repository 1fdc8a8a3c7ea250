package natsrelay

// Headers the relay sets on every message (besides Nats-Msg-Id, the message id).
const (
	// HeaderPayloadType carries the asyncmonolith payload type name.
	HeaderPayloadType = "Asyncmonolith-Payload-Type"
	// HeaderInsertID carries the producing service's insert id.
	HeaderInsertID = "Asyncmonolith-Insert-Id"
	// HeaderAttempt carries the relay run's attempt (1 on the first).
	HeaderAttempt = "Asyncmonolith-Attempt"
	// HeaderCreatedAt carries when the message was produced, Unix milliseconds.
	HeaderCreatedAt = "Asyncmonolith-Created-At"
	// HeaderTraceParent is the W3C trace context header, from the message's trace and span ids.
	HeaderTraceParent = "traceparent"
)
