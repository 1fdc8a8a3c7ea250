// Package cron parses the cron expressions of schedules and computes their occurrences in
// a time zone, with the rules asyncmonolith documents for daylight-saving changes. It
// wraps github.com/robfig/cron/v3, which parses the fields; the rules on top of it are
// here: which field counts are accepted, which zones, and what happens when a wall-clock
// time is skipped or repeats.
package cron

import (
	"errors"
	"fmt"
	"strings"
	"time"
	_ "time/tzdata" // zones resolve the same in a bare container

	robfig "github.com/robfig/cron/v3"
)

// ZoneMaxLen is the longest zone name accepted (the width of the zone column).
const ZoneMaxLen = 64

var (
	secondsParser  = robfig.NewParser(robfig.Second | robfig.Minute | robfig.Hour | robfig.Dom | robfig.Month | robfig.Dow | robfig.Descriptor)
	standardParser = robfig.NewParser(robfig.Minute | robfig.Hour | robfig.Dom | robfig.Month | robfig.Dow | robfig.Descriptor)
)

// ErrNeverFires reports an expression that has no occurrence (such as 30 February).
var ErrNeverFires = errors.New("the expression never fires")

// Schedule is a parsed expression in its zone.
type Schedule struct {
	sched robfig.Schedule
	loc   *time.Location
}

// Parse parses expr in the IANA zone ("" is UTC). Expressions have 6 fields (seconds
// first, as AsyncMonolith), the standard 5, or a descriptor (@daily, @every 90s). The
// zone "Local" is refused (it would differ between machines), and so is a zone given in
// the expression (TZ=, CRON_TZ=): the zone is an argument, stored in its own column.
func Parse(expr, zone string) (Schedule, error) {
	if zone == "" {
		zone = "UTC"
	}
	if zone == "Local" || len(zone) > ZoneMaxLen {
		return Schedule{}, fmt.Errorf("zone %.64q: use an IANA name such as Europe/London", zone)
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return Schedule{}, fmt.Errorf("zone %q: %w", zone, err)
	}
	trimmed := strings.TrimSpace(expr)
	if strings.HasPrefix(trimmed, "TZ=") || strings.HasPrefix(trimmed, "CRON_TZ=") {
		return Schedule{}, fmt.Errorf("%q: give the zone with InZone, not in the expression", expr)
	}
	parser := secondsParser
	if !strings.HasPrefix(trimmed, "@") {
		switch n := len(strings.Fields(trimmed)); n {
		case 6:
		case 5:
			parser = standardParser
		default:
			return Schedule{}, fmt.Errorf("%q has %d fields, want 5 (minute hour day month weekday), 6 (with seconds first) or a descriptor such as @daily", expr, n)
		}
	}
	s, err := parser.Parse(trimmed)
	if err != nil {
		return Schedule{}, fmt.Errorf("%q: %w", expr, err)
	}
	return Schedule{sched: s, loc: loc}, nil
}

// Location is the schedule's zone.
func (s Schedule) Location() *time.Location { return s.loc }

// Next returns the first occurrence strictly after t; prev is the occurrence that just
// fired (zero for none).
//
// When clocks go back, a wall-clock time repeats; robfig/cron would fire it twice, so an
// occurrence with the same wall clock as prev is skipped: 01:30 fires once that night. A
// wall-clock time that does not exist (skipped when clocks go forward) does not fire that
// day, as robfig/cron defines. An @every interval is elapsed time, not wall-clock time:
// its repeated wall clock is a real hour later and fires.
func (s Schedule) Next(t, prev time.Time) (time.Time, error) {
	n := s.sched.Next(t.In(s.loc))
	_, elapsed := s.sched.(robfig.ConstantDelaySchedule)
	if !prev.IsZero() && !n.IsZero() && !elapsed {
		p := prev.In(s.loc)
		if n.Format(time.DateTime) == p.Format(time.DateTime) && !n.Equal(p) {
			n = s.sched.Next(n)
		}
	}
	if n.IsZero() {
		return time.Time{}, ErrNeverFires
	}
	return n, nil
}
