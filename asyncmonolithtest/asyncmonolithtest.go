// Package asyncmonolithtest helps test code built on asyncmonolith: assert what a piece of
// code produced (typed), run a consumer synchronously, drain the queue without starting
// processors, and control time with a Clock plugged into Config.Clock.
package asyncmonolithtest

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

// Produced is one pending message of payload type T.
type Produced[T any] struct {
	Payload      T
	ID           string
	ConsumerType string
	InsertID     string
	Due          time.Time
	Attempts     int
}

// Filter narrows ListProduced and RequireProduced; zero fields match everything.
type Filter struct {
	ConsumerType string
	InsertID     string
}

// ListProduced returns the pending messages of payload type T that db can see (so, inside a
// test transaction, those the transaction wrote too), in fetch order.
func ListProduced[T any](db *gorm.DB, f ...Filter) ([]Produced[T], error) {
	var zero T
	name, err := am.PayloadTypeOf(zero)
	if err != nil {
		return nil, err
	}
	q := db.Session(&gorm.Session{NewDB: true}).Model(&am.ConsumerMessage{}).Where("payload_type = ?", name)
	for _, x := range f {
		if x.ConsumerType != "" {
			q = q.Where("consumer_type = ?", x.ConsumerType)
		}
		if x.InsertID != "" {
			q = q.Where("insert_id = ?", x.InsertID)
		}
	}
	var rows []am.ConsumerMessage
	if err := q.Order("available_after, created_at, id").Find(&rows).Error; err != nil {
		return nil, err
	}
	out := make([]Produced[T], len(rows))
	for i, r := range rows {
		out[i] = Produced[T]{ID: r.ID, ConsumerType: r.ConsumerType, InsertID: r.InsertID, Due: time.UnixMilli(r.AvailableAfter), Attempts: r.Attempts}
		if err := json.Unmarshal([]byte(r.Payload), &out[i].Payload); err != nil {
			return nil, fmt.Errorf("message %s: %w", r.ID, err)
		}
	}
	return out, nil
}

// RequireProduced returns the pending messages of payload type T matching f, and fails the
// test when there is none.
func RequireProduced[T any](t testing.TB, db *gorm.DB, f ...Filter) []Produced[T] {
	t.Helper()
	got, err := ListProduced[T](db, f...)
	if err != nil {
		t.Fatalf("asyncmonolithtest: %v", err)
	}
	if len(got) == 0 {
		var zero T
		t.Fatalf("asyncmonolithtest: no pending %T message matching %+v", zero, f)
	}
	return got
}

// RequireNotProduced fails the test when a pending message of payload type T matches f.
func RequireNotProduced[T any](t testing.TB, db *gorm.DB, f ...Filter) {
	t.Helper()
	got, err := ListProduced[T](db, f...)
	if err != nil {
		t.Fatalf("asyncmonolithtest: %v", err)
	}
	if len(got) > 0 {
		t.Fatalf("asyncmonolithtest: %d pending %T message(s), want none: first %+v", len(got), got[0].Payload, got[0])
	}
}

// Run runs consumer c once on payload, synchronously, as attempt 1 of 1. Message.Tx is a
// transaction on db, committed when c returns nil and rolled back otherwise; Run returns
// c's error (a panic is returned as an *asyncmonolith.PanicError).
func Run[T any](ctx context.Context, db *gorm.DB, c am.Consumer[T], payload T) (err error) {
	name, err := am.PayloadTypeOf(payload)
	if err != nil {
		return err
	}
	return db.WithContext(ctx).Transaction(func(tx *gorm.DB) (runErr error) {
		defer func() {
			if v := recover(); v != nil {
				runErr = &am.PanicError{Value: v}
			}
		}()
		m := &am.Message[T]{
			ID: "test-message", InsertID: "test-insert", PayloadType: name, Attempt: 1, MaxAttempts: 1,
			CreatedAt: time.Now(), Payload: payload, Tx: tx,
		}
		return c.Consume(ctx, m)
	})
}

// Drain fires due schedules and processes due messages, synchronously, until neither is
// left, and returns how many messages it fetched. Advance the plugin's Clock first to make
// delayed messages, retries and schedules due.
func Drain(ctx context.Context, p *am.Plugin) (int, error) {
	total := 0
	for {
		fired, err := p.FireSchedules(ctx)
		if err != nil {
			return total, err
		}
		n, err := p.ProcessBatch(ctx)
		if err != nil {
			return total, err
		}
		total += n
		if n == 0 && fired == 0 {
			return total, nil
		}
	}
}
