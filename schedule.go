package asyncmonolith

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/asyncmonolith/asyncmonolith/internal/cron"
	"gorm.io/gorm"
)

// Schedules are written by functions that take a *gorm.DB, so that a schedule can be
// created, changed or deleted in the caller's transaction, with the domain change it
// belongs to; they are read through the Plugin (GetSchedule, ListSchedules,
// PageSchedules), like the other tables. Firing is in scheduler.go.

// ScheduleOption configures Schedule and Reschedule.
type ScheduleOption func(*scheduleOptions)

// RescheduleOption configures Reschedule: any ScheduleOption, or WithPayload.
type RescheduleOption interface {
	applyReschedule(o *scheduleOptions)
}

func (f ScheduleOption) applyReschedule(o *scheduleOptions) { f(o) }

type scheduleOptions struct {
	zone       string
	tag        *string
	payload    any
	hasPayload bool
}

// InZone evaluates the cron expression in the IANA time zone name ("Europe/London").
// The default is "UTC" for Schedule, and the schedule's zone for Reschedule.
func InZone(name string) ScheduleOption { return func(o *scheduleOptions) { o.zone = name } }

// Tag labels a schedule, to list or delete related schedules together.
func Tag(tag string) ScheduleOption { return func(o *scheduleOptions) { o.tag = &tag } }

type payloadOption struct{ payload any }

func (p payloadOption) applyReschedule(o *scheduleOptions) { o.payload, o.hasPayload = p.payload, true }

// WithPayload replaces a schedule's payload. It is a RescheduleOption only: Schedule
// takes the payload as an argument, so passing WithPayload to it does not compile.
func WithPayload(payload any) RescheduleOption { return payloadOption{payload} }

// ParseCron checks a cron expression and a zone as Schedule would, and returns the next
// occurrence strictly after t. Expressions have 6 fields (with seconds, as AsyncMonolith),
// the standard 5, or a descriptor (@daily, @every 90s). Errors match ErrInvalidSchedule.
func ParseCron(expr, zone string, t time.Time) (time.Time, error) {
	cs, err := parseCron(expr, zone)
	if err != nil {
		return time.Time{}, err
	}
	return nextOccurrence(cs, t, time.Time{})
}

// parseCron is cron.Parse with the expression's length bounded by its column, and errors
// that match ErrInvalidSchedule.
func parseCron(expr, zone string) (cron.Schedule, error) {
	if len(expr) > NameMaxLen {
		return cron.Schedule{}, fmt.Errorf("%w: expression longer than %d bytes", ErrInvalidSchedule, NameMaxLen)
	}
	cs, err := cron.Parse(expr, zone)
	if err != nil {
		return cron.Schedule{}, fmt.Errorf("%w: %w", ErrInvalidSchedule, err)
	}
	return cs, nil
}

// nextOccurrence is cs.Next with errors that match ErrInvalidSchedule.
func nextOccurrence(cs cron.Schedule, t, prev time.Time) (time.Time, error) {
	n, err := cs.Next(t, prev)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %w", ErrInvalidSchedule, err)
	}
	return n, nil
}

// Schedule stores a recurring message: payload is produced (to every consumer of its
// type) at each occurrence of the cron expression, in the zone given by InZone (UTC by
// default). It returns the schedule's id. On a *gorm.DB inside a transaction the schedule
// is written in that transaction; otherwise in one of its own. An invalid expression or
// zone fails here with ErrInvalidSchedule, never at fire time.
func Schedule(ctx context.Context, db *gorm.DB, payload any, expr string, opts ...ScheduleOption) (string, error) {
	p, err := pluginOf(db)
	if err != nil {
		return "", err
	}
	o := scheduleOptions{}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
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
	due, err := nextOccurrence(cs, now, time.Time{})
	if err != nil {
		return "", err
	}
	row := ScheduledMessage{
		ID: p.ids.New(now), Tag: o.tag, AvailableAfter: due.UnixMilli(),
		ChronExpression: strings.TrimSpace(expr), ChronTimezone: cs.Location().String(),
		PayloadType: name, Payload: body,
	}
	err = db.WithContext(ctx).Session(&gorm.Session{NewDB: true}).Create(&row).Error
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
// its zone, tag or payload), and recomputes its next due time from now. On a *gorm.DB
// inside a transaction it writes in that transaction. An id that does not exist fails
// with ErrScheduleNotFound.
func Reschedule(ctx context.Context, db *gorm.DB, id, expr string, opts ...RescheduleOption) error {
	p, err := pluginOf(db)
	if err != nil {
		return err
	}
	o := scheduleOptions{}
	for _, opt := range opts {
		if opt != nil {
			opt.applyReschedule(&o)
		}
	}
	var row ScheduledMessage
	if !p.storable(id) {
		return fmt.Errorf("%w: %q", ErrScheduleNotFound, id) // no row holds an id its database cannot store
	}
	s := db.WithContext(ctx).Session(&gorm.Session{NewDB: true})
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
	due, err := nextOccurrence(cs, p.now(), time.Time{})
	if err != nil {
		return err
	}
	updates := map[string]any{
		"chron_expression": strings.TrimSpace(expr), "chron_timezone": cs.Location().String(), "available_after": due.UnixMilli(),
	}
	if o.tag != nil {
		if err := p.checkTag(*o.tag); err != nil {
			return err
		}
		updates["tag"] = *o.tag
	}
	if o.hasPayload {
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

// DeleteSchedule removes a schedule, in db's transaction if it has one. It fails with
// ErrScheduleNotFound when there is none.
func DeleteSchedule(ctx context.Context, db *gorm.DB, id string) error {
	p, err := pluginOf(db)
	if err != nil {
		return err
	}
	if !p.storable(id) {
		return fmt.Errorf("%w: %q", ErrScheduleNotFound, id) // no row holds an id its database cannot store
	}
	res := db.WithContext(ctx).Session(&gorm.Session{NewDB: true}).Where("id = ?", id).Delete(&ScheduledMessage{})
	if res.Error != nil {
		return p.wrapDBError("delete schedule", res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("%w: %q", ErrScheduleNotFound, id)
	}
	return nil
}

// DeleteSchedulesByTag removes every schedule with the tag, in db's transaction if it has
// one, and returns how many. On PostgreSQL a tag holding a NUL byte or invalid UTF-8
// fails with ErrInvalidOption.
func DeleteSchedulesByTag(ctx context.Context, db *gorm.DB, tag string) (int64, error) {
	p, err := pluginOf(db)
	if err != nil {
		return 0, err
	}
	if err := p.checkTagFilter(tag); err != nil {
		return 0, err
	}
	res := db.WithContext(ctx).Session(&gorm.Session{NewDB: true}).Where("tag = ?", tag).Delete(&ScheduledMessage{})
	if res.Error != nil {
		return 0, p.wrapDBError("delete schedules", res.Error)
	}
	return res.RowsAffected, nil
}

// GetSchedule returns one schedule, or an error matching ErrScheduleNotFound.
func (p *Plugin) GetSchedule(ctx context.Context, id string) (ScheduleInfo, error) {
	db, err := p.adminDB(ctx)
	if err != nil {
		return ScheduleInfo{}, err
	}
	var row ScheduledMessage
	err = gorm.ErrRecordNotFound // no row holds an id its database cannot store
	if p.storable(id) {
		err = readOnSource(db, func(tx *gorm.DB) error { return tx.Where("id = ?", id).Take(&row).Error })
	}
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return ScheduleInfo{}, fmt.Errorf("%w: %q", ErrScheduleNotFound, id)
	}
	if err != nil {
		return ScheduleInfo{}, p.wrapDBError("get schedule", err)
	}
	return scheduleInfos([]ScheduledMessage{row})[0], nil
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
