package asyncmonolith

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/asyncmonolith/asyncmonolith/internal/dialect"
	"github.com/asyncmonolith/asyncmonolith/internal/wake"
)

// The scheduled-message processor: it fires the due schedules (fireSchedules holds its
// queries), producing each one's payload and advancing it to its next occurrence.

// brokenScheduleRetry is how long a schedule that cannot be parsed (edited by hand, or a
// zone that vanished) or has no consumer in this process waits before it is tried again.
const brokenScheduleRetry = time.Minute

// FireSchedules fires the due schedules once, synchronously, as a scheduled-message
// processor would, and returns how many it fetched. It is for tests and tools; it may run
// beside started processors.
func (p *Plugin) FireSchedules(ctx context.Context) (int, error) {
	if !p.ready.Load() {
		return 0, ErrNotRegistered
	}
	n, _, err := p.fireSchedules(ctx)
	return n, err
}

// fireSchedules fires one batch of due schedules in one transaction and returns how many
// it fetched and the earliest next due time among them.
func (p *Plugin) fireSchedules(ctx context.Context) (int, time.Time, error) {
	cfg := p.cfg
	tx := p.db.WithContext(ctx).Begin(p.dialect.ProcessorTxOptions())
	if tx.Error != nil {
		return 0, time.Time{}, p.wrapDBError("begin schedule batch", tx.Error)
	}
	committed := false
	defer func() {
		if !committed {
			tx.Rollback()
		}
	}()
	now := p.now()
	var due []ScheduledMessage
	err := tx.Clauses(dialect.SkipLocked).Where("available_after <= ?", now.UnixMilli()).
		Order("available_after, id").Limit(cfg.ScheduleBatchSize).Find(&due).Error
	if err != nil {
		return 0, time.Time{}, p.wrapDBError("fetch schedules", err)
	}
	if len(due) == 0 {
		return 0, time.Time{}, nil
	}
	var msgs []newRow
	var earliest time.Time
	var fired []*ScheduledMessage
	type skip struct {
		s   *ScheduledMessage
		err error
	}
	var skipped []skip
	for i := range due {
		s := &due[i]
		next, rows, err := p.fire(s, now)
		if err != nil {
			next = now.Add(brokenScheduleRetry)
			p.cfg.Logger.ErrorContext(ctx, "asyncmonolith: schedule skipped", "schedule_id", s.ID, "expression", s.ChronExpression,
				"zone", s.ChronTimezone, "payload_type", s.PayloadType, "error", err, "retry_at", next)
			skipped = append(skipped, skip{s, err})
		} else {
			fired = append(fired, s)
		}
		msgs = append(msgs, rows...)
		if earliest.IsZero() || next.Before(earliest) {
			earliest = next
		}
		if err := tx.Model(&ScheduledMessage{}).Where("id = ?", s.ID).Update("available_after", next.UnixMilli()).Error; err != nil {
			return len(due), time.Time{}, p.wrapDBError("advance schedule", err)
		}
	}
	if len(msgs) > 0 {
		if err := p.insertRows(tx, msgs); err != nil {
			return len(due), time.Time{}, err
		}
	}
	committed = true
	if err := tx.Commit().Error; err != nil {
		return len(due), time.Time{}, p.wrapDBError("commit schedule batch", err)
	}
	if len(msgs) > 0 {
		p.wake.Notify()
	}
	if p.cfg.Hooks.ScheduleFired != nil {
		for _, s := range fired {
			p.callHook(ctx, "ScheduleFired", func() { p.cfg.Hooks.ScheduleFired(ctx, s.ID, s.PayloadType) })
		}
	}
	if p.cfg.Hooks.ScheduleSkipped != nil {
		for _, k := range skipped {
			p.callHook(ctx, "ScheduleSkipped", func() { p.cfg.Hooks.ScheduleSkipped(ctx, k.s.ID, k.s.PayloadType, k.err) })
		}
	}
	return len(due), earliest, nil
}

// fire returns a schedule's next due time and the messages of the occurrence that is due.
// Their insert id names the schedule and the occurrence, so that the same occurrence can
// never be pending twice.
func (p *Plugin) fire(s *ScheduledMessage, now time.Time) (time.Time, []newRow, error) {
	cs, err := parseCron(s.ChronExpression, s.ChronTimezone)
	if err != nil {
		return time.Time{}, nil, err
	}
	consumers := p.registry.consumersOf(s.PayloadType)
	if len(consumers) == 0 {
		return time.Time{}, nil, fmt.Errorf("%w: %q in this process", ErrNoConsumers, s.PayloadType)
	}
	occurrence := time.UnixMilli(s.AvailableAfter)
	next, err := nextOccurrence(cs, now, occurrence)
	if err != nil {
		return time.Time{}, nil, err
	}
	insertID := fmt.Sprintf("schedule:%s:%d", s.ID, s.AvailableAfter)
	rows := make([]newRow, 0, len(consumers))
	for _, c := range consumers {
		rows = append(rows, newRow{ConsumerMessage: ConsumerMessage{
			ID: p.ids.New(now), CreatedAt: now.UnixMilli(), AvailableAfter: now.UnixMilli(),
			ConsumerType: c.consumerType, PayloadType: s.PayloadType, Payload: s.Payload, InsertID: insertID,
		}})
	}
	return next, rows, nil
}

// scheduler is one scheduled-message processing loop.
type scheduler struct {
	p      *Plugin
	index  int
	wakeCh chan struct{}
}

func (s *scheduler) loop(fetchCtx, workCtx context.Context) {
	p := s.p
	cfg := p.cfg
	log := p.cfg.Logger.With("schedule_processor", s.index)
	failures := 0
	wake.Loop(fetchCtx, time.Duration(rand.Int64N(int64(cfg.ProcessorMinDelay)+1)), s.wakeCh, nil, func(bool) time.Duration {
		n, earliest, err := p.fireSchedules(workCtx)
		delay := wake.Jitter(cfg.SchedulePollInterval)
		switch {
		case fetchCtx.Err() != nil:
			return wake.Keep // stopping: Loop returns
		case err != nil && errors.Is(err, ErrRetryable):
			delay = 0
		case err != nil:
			failures++
			delay = wake.Backoff(failures, cfg.ProcessorMinDelay, cfg.SchedulePollInterval)
			log.ErrorContext(workCtx, "asyncmonolith: schedule batch failed", "error", err, "retry_in", delay)
		case n >= cfg.ScheduleBatchSize:
			failures = 0
			delay = cfg.ProcessorMinDelay
		default:
			failures = 0
			// Wake for the earliest schedule this batch advanced, if it comes before the poll.
			if !earliest.IsZero() {
				if d := earliest.Sub(p.now()); d < delay {
					delay = max(d, 0)
				}
			}
		}
		return delay
	})
}

// startSchedulers starts the scheduled-message processors.
func (p *Plugin) startSchedulers(fetchCtx, workCtx context.Context, wg *sync.WaitGroup) {
	for i := range p.cfg.ScheduleProcessors {
		s := &scheduler{p: p, index: i, wakeCh: p.wake.Subscribe()}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer p.wake.Unsubscribe(s.wakeCh)
			s.loop(fetchCtx, workCtx)
		}()
	}
}

// checkScheduleConcurrency refuses concurrent scheduled-message processors without row locks.
func (p *Plugin) checkScheduleConcurrency() error {
	if p.cfg.ScheduleProcessors > 1 {
		return fmt.Errorf("%w: Config.ScheduleProcessors = %d on %s; use 1", ErrConcurrencyUnsupported, p.cfg.ScheduleProcessors, p.dialect.Name())
	}
	return nil
}
