package asyncmonolith_test

import (
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// TestEveryIsElapsedTimeAcrossDST: "@every 1h" in Europe/London fires every real hour
// through both of 2026's transitions. When clocks go back (02:00 BST → 01:00 GMT on
// 25 October) 01:00 comes twice, an hour apart, and both fire; when they go forward
// (01:00 GMT → 02:00 BST on 29 March) the hour after 00:00 GMT is 02:00 BST.
func TestEveryIsElapsedTimeAcrossDST(t *testing.T) {
	t.Parallel()
	london, err := time.LoadLocation("Europe/London")
	if err != nil {
		t.Fatal(err)
	}
	eachDB(t, func(t *testing.T, dialect string) {
		for _, start := range []time.Time{
			time.Date(2026, 10, 24, 22, 0, 0, 0, time.UTC), // 23:00 BST
			time.Date(2026, 3, 28, 22, 0, 0, 0, time.UTC),  // 22:00 GMT
		} {
			e := setup(t, dialect, am.Config{})
			reportConsumers(t, e.p)
			e.clock.Advance(start.Sub(e.clock.Now()))
			id, err := am.Schedule(t.Context(), e.db, WeeklyReport{Week: "hourly"}, "@every 1h", am.InZone("Europe/London"))
			if err != nil {
				t.Fatal(err)
			}
			var fired []string
			for i := 1; i <= 6; i++ {
				s, err := e.p.GetSchedule(t.Context(), id)
				if err != nil {
					t.Fatal(err)
				}
				due := time.UnixMilli(s.AvailableAfter)
				if want := start.Add(time.Duration(i) * time.Hour); !due.Equal(want) {
					t.Fatalf("after %v: due %s, want %s (an hour after the last)", fired, due.In(london).Format("15:04 MST"), want.In(london).Format("15:04 MST"))
				}
				e.clock.Advance(due.Sub(e.clock.Now()))
				if mustFire(t, e.p) != 1 {
					t.Fatalf("did not fire at %s", due.In(london).Format("15:04 MST"))
				}
				fired = append(fired, due.In(london).Format("15:04 MST"))
			}
			t.Logf("fired at %v", fired)
		}
	})
}
