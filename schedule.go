package asyncmonolith

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"time"
	_ "time/tzdata" // zones resolve the same in a bare container

	"github.com/asyncmonolith/asyncmonolith/internal/dialect"
	"github.com/asyncmonolith/asyncmonolith/internal/wake"
	"github.com/robfig/cron/v3"
	"gorm.io/gorm"
)

// ScheduleOption configures Schedule and Reschedule.
type ScheduleOption func(*scheduleOptions)

type scheduleOptions struct {
	zone    string
	tag     *string
	payload any
}

// InZone evaluates the cron expression in the IANA time zone name ("Europe/London").
// The default is "UTC".
func InZone(name string) ScheduleOption { return func(o *scheduleOptions) { o.zone = name } }

// Tag labels a schedule, to list or delete related schedules together.
func Tag(tag string) ScheduleOption { return func(o *scheduleOptions) { o.tag = &tag } }

// WithPayload replaces a schedule's payload (Reschedule only).
func WithPayload(payload any) ScheduleOption { return func(o *scheduleOptions) { o.payload = payload } }

var (
	secondsParser  = cron.NewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
	standardParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
)

// cronSchedule is a parsed expression in its zone.
type cronSchedule struct {
	sched cron.Schedule
	loc   *time.Location
}

// ParseCron checks a cron expression and a zone as Schedule would, and returns the next
// occurrence strictly after t. Expressions have 6 fields (with seconds, as AsyncMonolith),
// the standard 5, or a descriptor (@daily, @every 90s). Errors match ErrInvalidSchedule.
func ParseCron(expr, zone string, t time.Time) (time.Time, error) {
	cs, err := parseCron(expr, zone)
	if err != nil {
		return time.Time{}, err
	}
	return cs.next(t, time.Time{})
}

func parseCron(expr, zone string) (cronSchedule, error) {
	if zone == "" {
		zone = "UTC"
	}
	if len(expr) > NameMaxLen {
		return cronSchedule{}, fmt.Errorf("%w: expression longer than %d bytes", ErrInvalidSchedule, NameMaxLen)
	}
	if zone == "Local" || len(zone) > 64 {
		return cronSchedule{}, fmt.Errorf("%w: zone %.64q: use an IANA name such as Europe/London", ErrInvalidSchedule, zone)
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return cronSchedule{}, fmt.Errorf("%w: zone %q: %w", ErrInvalidSchedule, zone, err)
	}
	trimmed := strings.TrimSpace(expr)
	if strings.HasPrefix(trimmed, "TZ=") || strings.HasPrefix(trimmed, "CRON_TZ=") {
		return cronSchedule{}, fmt.Errorf("%w: %q: give the zone with InZone, not in the expression", ErrInvalidSchedule, expr)
	}
	parser := secondsParser
	if !strings.HasPrefix(trimmed, "@") {
		switch n := len(strings.Fields(trimmed)); n {
		case 6:
		case 5:
			parser = standardParser
		default:
			return cronSchedule{}, fmt.Errorf("%w: %q has %d fields, want 5 (minute hour day month weekday), 6 (with seconds first) or a descriptor such as @daily", ErrInvalidSchedule, expr, n)
		}
	}
	s, err := parser.Parse(trimmed)
	if err != nil {
		return cronSchedule{}, fmt.Errorf("%w: %q: %w", ErrInvalidSchedule, expr, err)
	}
	return cronSchedule{sched: s, loc: loc}, nil
}

// next returns the first occurrence strictly after t. When clocks go back, a wall-clock
// time repeats; robfig/cron would fire it twice, so an occurrence with the same wall
// clock as prev (the occurrence that just fired) is skipped: 01:30 fires once that night.
// A wall-clock time that does not exist (skipped when clocks go forward) does not fire
// that day, as robfig/cron defines. An @every interval is elapsed time, not wall-clock
// time: its repeated wall clock is a real hour later and fires.
func (c cronSchedule) next(t, prev time.Time) (time.Time, error) {
	n := c.sched.Next(t.In(c.loc))
	_, elapsed := c.sched.(cron.ConstantDelaySchedule)
	if !prev.IsZero() && !n.IsZero() && !elapsed {
		p := prev.In(c.loc)
		if n.Format(time.DateTime) == p.Format(time.DateTime) && !n.Equal(p) {
			n = c.sched.Next(n)
		}
	}
	if n.IsZero() {
		return time.Time{}, fmt.Errorf("%w: the expression never fires", ErrInvalidSchedule)
	}
	return n, nil
}

// Schedule stores a recurring message: payload is produced (to every consumer of its
// type) at each occurrence of the cron expression, in the zone given by InZone (UTC by
// default). It returns the schedule's id. On a *gorm.DB inside a transaction the schedule
// is written in that transaction; otherwise in one of its own. An invalid expression or
// zone fails here with ErrInvalidSchedule, never at fire time.
func Schedule(db *gorm.DB, payload any, expr string, opts ...ScheduleOption) (string, error) {
	p, err := pluginOf(db)
	if err != nil {
		return "", err
	}
	o := scheduleOptions{}
	for _, opt := range opts {
		opt(&o)
	}
	cs, err := parseCron(expr, o.zone)
	if err != nil {
		return "", err
	}
	name, body, err := p.encodeScheduled(payload)
	if err != nil {
		return "", err
	}
	if o.tag != nil {
		if err := p.checkTag(*o.tag); err != nil {
			return "", err
		}
	}
	now := p.now()
	due, err := cs.next(now, time.Time{})
	if err != nil {
		return "", err
	}
	row := ScheduledMessage{
		ID: p.ids.New(now), Tag: o.tag, AvailableAfter: due.UnixMilli(),
		ChronExpression: strings.TrimSpace(expr), ChronTimezone: cs.loc.String(),
		PayloadType: name, Payload: body,
	}
	err = db.Session(&gorm.Session{NewDB: true}).Create(&row).Error
	if err != nil {
		return "", p.wrapDBError("schedule", err)
	}
	p.wake.Notify()
	return row.ID, nil
}

// encodeScheduled checks that payload has consumers and encodes it.
func (p *Plugin) encodeScheduled(payload any) (string, string, error) {
	name, err := payloadTypeName(reflect.TypeOf(payload))
	if err != nil {
		return "", "", err
	}
	if len(p.registry.consumersOf(name)) == 0 {
		return "", "", fmt.Errorf("%w: %q (register a consumer with asyncmonolith.Register)", ErrNoConsumers, name)
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return "", "", fmt.Errorf("%w: %s: %w", ErrInvalidPayload, name, err)
	}
	return name, string(body), nil
}

// Reschedule changes a schedule's cron expression (and, with InZone, Tag or WithPayload,
// its zone, tag or payload), and recomputes its next due time from now.
func Reschedule(db *gorm.DB, id, expr string, opts ...ScheduleOption) error {
	p, err := pluginOf(db)
	if err != nil {
		return err
	}
	o := scheduleOptions{}
	for _, opt := range opts {
		opt(&o)
	}
	var row ScheduledMessage
	if !p.storable(id) {
		return fmt.Errorf("%w: %q", ErrScheduleNotFound, id) // no row holds an id its database cannot store
	}
	s := db.Session(&gorm.Session{NewDB: true})
	if err := readOnSource(s, func(tx *gorm.DB) error { return tx.Where("id = ?", id).Take(&row).Error }); err != nil {
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return fmt.Errorf("%w: %q", ErrScheduleNotFound, id)
		}
		return p.wrapDBError("reschedule", err)
	}
	zone := row.ChronTimezone
	if o.zone != "" {
		zone = o.zone
	}
	cs, err := parseCron(expr, zone)
	if err != nil {
		return err
	}
	due, err := cs.next(p.now(), time.Time{})
	if err != nil {
		return err
	}
	updates := map[string]any{
		"chron_expression": strings.TrimSpace(expr), "chron_timezone": cs.loc.String(), "available_after": due.UnixMilli(),
	}
	if o.tag != nil {
		if err := p.checkTag(*o.tag); err != nil {
			return err
		}
		updates["tag"] = *o.tag
	}
	if o.payload != nil {
		name, body, err := p.encodeScheduled(o.payload)
		if err != nil {
			return err
		}
		updates["payload_type"], updates["payload"] = name, body
	}
	if err := s.Model(&ScheduledMessage{}).Where("id = ?", id).Updates(updates).Error; err != nil {
		return p.wrapDBError("reschedule", err)
	}
	p.wake.Notify()
	return nil
}

// DeleteSchedule removes a schedule. It fails with ErrScheduleNotFound when there is none.
func DeleteSchedule(db *gorm.DB, id string) error {
	p, err := pluginOf(db)
	if err != nil {
		return err
	}
	if !p.storable(id) {
		return fmt.Errorf("%w: %q", ErrScheduleNotFound, id) // no row holds an id its database cannot store
	}
	res := db.Session(&gorm.Session{NewDB: true}).Where("id = ?", id).Delete(&ScheduledMessage{})
	if res.Error != nil {
		return p.wrapDBError("delete schedule", res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("%w: %q", ErrScheduleNotFound, id)
	}
	return nil
}

// DeleteSchedulesByTag removes every schedule with the tag and returns how many. On
// PostgreSQL a tag holding a NUL byte or invalid UTF-8 fails with ErrInvalidOption.
func DeleteSchedulesByTag(db *gorm.DB, tag string) (int64, error) {
	p, err := pluginOf(db)
	if err != nil {
		return 0, err
	}
	if err := p.checkTagFilter(tag); err != nil {
		return 0, err
	}
	res := db.Session(&gorm.Session{NewDB: true}).Where("tag = ?", tag).Delete(&ScheduledMessage{})
	if res.Error != nil {
		return 0, p.wrapDBError("delete schedules", res.Error)
	}
	return res.RowsAffected, nil
}

// SchedulesByTag lists the schedules with the tag, by next due time. On PostgreSQL a tag
// holding a NUL byte or invalid UTF-8 fails with ErrInvalidOption.
func SchedulesByTag(db *gorm.DB, tag string) ([]ScheduledMessage, error) {
	var rows []ScheduledMessage
	if p, err := pluginOf(db); err == nil {
		if err := p.checkTagFilter(tag); err != nil {
			return nil, err
		}
	}
	err := readOnSource(db.Session(&gorm.Session{NewDB: true}), func(tx *gorm.DB) error {
		return tx.Where("tag = ?", tag).Order("available_after, id").Find(&rows).Error
	})
	if err != nil {
		return nil, fmt.Errorf("asyncmonolith: list schedules: %w", err)
	}
	return rows, nil
}

// GetSchedule returns one schedule, or ErrScheduleNotFound.
func GetSchedule(db *gorm.DB, id string) (ScheduledMessage, error) {
	var row ScheduledMessage
	if p, err := pluginOf(db); err == nil && !p.storable(id) {
		return row, fmt.Errorf("%w: %q", ErrScheduleNotFound, id) // no row holds an id its database cannot store
	}
	err := readOnSource(db.Session(&gorm.Session{NewDB: true}), func(tx *gorm.DB) error {
		return tx.Where("id = ?", id).Take(&row).Error
	})
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return row, fmt.Errorf("%w: %q", ErrScheduleNotFound, id)
	}
	if err != nil {
		return row, fmt.Errorf("asyncmonolith: get schedule: %w", err)
	}
	return row, nil
}

// checkTag checks a tag a schedule is given: a name (checkName) that p's database can store.
func (p *Plugin) checkTag(tag string) error {
	if err := checkName("tag", tag); err != nil {
		return err
	}
	if !p.storable(tag) {
		return fmt.Errorf("%w: tag %q holds bytes PostgreSQL text cannot", ErrInvalidName, tag)
	}
	return nil
}

// checkTagFilter refuses, with ErrInvalidOption, a tag to select schedules by that p's
// database cannot compare (PostgreSQL would refuse the query with an error of its own).
func (p *Plugin) checkTagFilter(tag string) error {
	if !p.storable(tag) {
		return fmt.Errorf("%w: tag %q holds bytes PostgreSQL text cannot", ErrInvalidOption, tag)
	}
	return nil
}

// brokenScheduleRetry is how long a schedule that cannot be parsed (edited by hand, or a
// zone that vanished) or has no consumer in this process waits before it is tried again.
const brokenScheduleRetry = time.Minute

// FireSchedules fires the due schedules once, synchronously, as a scheduled-message
// processor would, and returns how many it fetched. It is for tests and tools; it may run
// beside started processors.
func (p *Plugin) FireSchedules(ctx context.Context) (int, error) {
	p.mu.Lock()
	ready := p.db != nil
	p.mu.Unlock()
	if !ready {
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
	var msgs []ConsumerMessage
	var earliest time.Time
	for i := range due {
		s := &due[i]
		next, rows, err := p.fire(s, now)
		if err != nil {
			next = now.Add(brokenScheduleRetry)
			p.log.ErrorContext(ctx, "asyncmonolith: schedule skipped", "schedule_id", s.ID, "expression", s.ChronExpression,
				"zone", s.ChronTimezone, "payload_type", s.PayloadType, "error", err, "retry_at", next)
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
		if p.hooks.ScheduleFired != nil {
			for _, s := range due {
				p.hooks.ScheduleFired(ctx, s.ID, s.PayloadType)
			}
		}
	}
	return len(due), earliest, nil
}

// fire returns a schedule's next due time and the messages of the occurrence that is due.
// Their insert id names the schedule and the occurrence, so that the same occurrence can
// never be pending twice.
func (p *Plugin) fire(s *ScheduledMessage, now time.Time) (time.Time, []ConsumerMessage, error) {
	cs, err := parseCron(s.ChronExpression, s.ChronTimezone)
	if err != nil {
		return time.Time{}, nil, err
	}
	consumers := p.registry.consumersOf(s.PayloadType)
	if len(consumers) == 0 {
		return time.Time{}, nil, fmt.Errorf("%w: %q in this process", ErrNoConsumers, s.PayloadType)
	}
	occurrence := time.UnixMilli(s.AvailableAfter)
	next, err := cs.next(now, occurrence)
	if err != nil {
		return time.Time{}, nil, err
	}
	insertID := fmt.Sprintf("schedule:%s:%d", s.ID, s.AvailableAfter)
	rows := make([]ConsumerMessage, 0, len(consumers))
	for _, c := range consumers {
		rows = append(rows, ConsumerMessage{
			ID: p.ids.New(now), CreatedAt: now.UnixMilli(), AvailableAfter: now.UnixMilli(),
			ConsumerType: c.consumerType, PayloadType: s.PayloadType, Payload: s.Payload, InsertID: insertID,
		})
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
	log := p.log.With("schedule_processor", s.index)
	timer := time.NewTimer(time.Duration(rand.Int64N(int64(cfg.ProcessorMinDelay) + 1)))
	defer timer.Stop()
	failures := 0
	for {
		select {
		case <-fetchCtx.Done():
			return
		case <-s.wakeCh:
		case <-timer.C:
		}
		n, earliest, err := p.fireSchedules(workCtx)
		if fetchCtx.Err() != nil {
			return
		}
		delay := wake.Jitter(cfg.SchedulePollInterval)
		switch {
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
		timer.Reset(delay)
	}
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
