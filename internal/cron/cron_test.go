package cron

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const layout = "2006-01-02 15:04:05 -0700" // the offset tells a repeated wall clock apart

func mustLoad(t *testing.T, zone string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// TestOccurrencesAcrossDaylightSaving follows each schedule from a start time, feeding
// every occurrence back as prev as the scheduler does, through the gaps (clocks go
// forward: a wall-clock time that does not exist is skipped that day) and the overlaps
// (clocks go back: a repeated wall-clock time fires once, except for @every, which is
// elapsed time) of zones in both hemispheres, with whole-hour and half-hour shifts.
func TestOccurrencesAcrossDaylightSaving(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, expr, zone, from string // from is in the zone's wall clock, unambiguous
		want                   []string
	}{
		{"London overlap: 01:30 fires once", "0 30 1 * * *", "Europe/London", "2026-10-24 12:00",
			[]string{"2026-10-25 01:30:00 +0100", "2026-10-26 01:30:00 +0000", "2026-10-27 01:30:00 +0000"}},
		{"London gap: 01:30 does not exist on 29 March", "30 1 * * *", "Europe/London", "2026-03-28 12:00",
			[]string{"2026-03-30 01:30:00 +0100", "2026-03-31 01:30:00 +0100"}},
		{"London overlap: hourly fires 01:00 once", "0 0 * * * *", "Europe/London", "2026-10-25 00:30",
			[]string{"2026-10-25 01:00:00 +0100", "2026-10-25 02:00:00 +0000", "2026-10-25 03:00:00 +0000"}},
		{"London overlap: @every 1h is elapsed time", "@every 1h", "Europe/London", "2026-10-25 00:00",
			[]string{"2026-10-25 01:00:00 +0100", "2026-10-25 01:00:00 +0000", "2026-10-25 02:00:00 +0000"}},
		{"London gap: @every 1h is elapsed time", "@every 1h", "Europe/London", "2026-03-29 00:00",
			[]string{"2026-03-29 02:00:00 +0100", "2026-03-29 03:00:00 +0100"}},
		{"New York gap: 02:30 does not exist on 8 March", "0 30 2 * * *", "America/New_York", "2026-03-07 12:00",
			[]string{"2026-03-09 02:30:00 -0400", "2026-03-10 02:30:00 -0400"}},
		{"New York overlap: 01:30 fires once", "30 1 * * *", "America/New_York", "2026-10-31 12:00",
			[]string{"2026-11-01 01:30:00 -0400", "2026-11-02 01:30:00 -0500"}},
		{"New York: @daily is local midnight on both sides", "@daily", "America/New_York", "2026-03-07 12:00",
			[]string{"2026-03-08 00:00:00 -0500", "2026-03-09 00:00:00 -0400"}},
		{"Sydney overlap (April): 02:30 fires once", "0 30 2 * * *", "Australia/Sydney", "2026-04-04 12:00",
			[]string{"2026-04-05 02:30:00 +1100", "2026-04-06 02:30:00 +1000"}},
		{"Sydney gap (October): 02:30 does not exist", "0 30 2 * * *", "Australia/Sydney", "2026-10-03 12:00",
			[]string{"2026-10-05 02:30:00 +1100"}},
		{"Lord Howe overlap of 30 minutes: 01:45 fires once", "0 45 1 * * *", "Australia/Lord_Howe", "2026-04-04 12:00",
			[]string{"2026-04-05 01:45:00 +1100", "2026-04-06 01:45:00 +1030"}},
		{"Lord Howe gap of 30 minutes: 02:15 does not exist", "15 2 * * *", "Australia/Lord_Howe", "2026-10-03 12:00",
			[]string{"2026-10-05 02:15:00 +1100"}},
		{"Kolkata: no daylight saving, half-hour offset", "0 9 * * MON", "Asia/Kolkata", "2026-01-05 12:00",
			[]string{"2026-01-12 09:00:00 +0530", "2026-01-19 09:00:00 +0530"}},
		{"UTC by default", "0 0 12 * * *", "", "2026-01-05 12:00",
			[]string{"2026-01-06 12:00:00 +0000", "2026-01-07 12:00:00 +0000"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s, err := Parse(c.expr, c.zone)
			if err != nil {
				t.Fatal(err)
			}
			from, err := time.ParseInLocation("2006-01-02 15:04", c.from, s.Location())
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			at, prev := from, time.Time{}
			for range c.want {
				n, err := s.Next(at, prev)
				if err != nil {
					t.Fatal(err)
				}
				if !n.After(at) {
					t.Fatalf("Next(%v) = %v, not after", at, n)
				}
				got = append(got, n.Format(layout))
				at, prev = n, n
			}
			if strings.Join(got, ", ") != strings.Join(c.want, ", ") {
				t.Fatalf("occurrences:\n got %v\nwant %v", got, c.want)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ expr, zone, says string }{
		{"", "", "has 0 fields"},
		{"* * *", "", "has 3 fields"},
		{"0 0 0 * * * *", "", "has 7 fields"},
		{"61 * * * * *", "", "61"},
		{"* 24 * * *", "", "24"},
		{"@sometimes", "", "@sometimes"},
		{"CRON_TZ=UTC 0 * * * *", "", "give the zone with InZone"},
		{"TZ=Europe/London 0 * * * *", "", "give the zone with InZone"},
		{"0 0 12 * * MON", "Mars/Olympus", "Mars/Olympus"},
		{"0 0 12 * * MON", "Local", "use an IANA name"},
		{"0 0 12 * * MON", strings.Repeat("x", ZoneMaxLen+1), "use an IANA name"},
		{"0 0 12 * * MON", "../../etc/passwd", "passwd"},
		{"0 0 12 * * MON", "europe/london\x00", "zone"},
	} {
		if _, err := Parse(c.expr, c.zone); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("Parse(%q, %q) = %v, want an error saying %q", c.expr, c.zone, err, c.says)
		}
	}
}

func TestParseAccepts(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ expr, zone, loc string }{
		{"* * * * *", "", "UTC"},
		{"*/5 * * * * *", "UTC", "UTC"},
		{"  0 9 * * MON-FRI  ", "America/New_York", "America/New_York"},
		{"@hourly", "Asia/Kolkata", "Asia/Kolkata"},
		{"@every 90s", "Europe/London", "Europe/London"},
	} {
		s, err := Parse(c.expr, c.zone)
		if err != nil {
			t.Errorf("Parse(%q, %q): %v", c.expr, c.zone, err)
			continue
		}
		if got := s.Location().String(); got != c.loc {
			t.Errorf("Parse(%q, %q) is in %s, want %s", c.expr, c.zone, got, c.loc)
		}
	}
}

// An expression that parses but names no real day never fires: Next says so rather than
// returning the zero time.
func TestNeverFires(t *testing.T) {
	t.Parallel()
	for _, expr := range []string{"0 0 0 30 2 *", "0 0 31 4 *"} {
		s, err := Parse(expr, "Europe/London")
		if err != nil {
			t.Fatal(err)
		}
		if n, err := s.Next(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Time{}); !errors.Is(err, ErrNeverFires) {
			t.Errorf("Next of %q = %v, %v, want ErrNeverFires", expr, n, err)
		}
	}
}

// Next keeps the schedule's zone whatever the zone of the time it is given.
func TestNextIsInTheSchedulesZone(t *testing.T) {
	t.Parallel()
	s, err := Parse("0 0 9 * * *", "Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	from := time.Date(2026, 6, 1, 12, 0, 0, 0, mustLoad(t, "America/Los_Angeles")) // 04:00 on 2 June in Tokyo
	n, err := s.Next(from, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if got := n.Format(layout); got != "2026-06-02 09:00:00 +0900" {
		t.Fatalf("Next = %s, want 09:00 on 2 June in Tokyo", got)
	}
}
