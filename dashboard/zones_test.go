package dashboard

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
)

type tick struct{}

type nop struct{}

func (nop) Consume(context.Context, *am.Message[tick]) error { return nil }

// countingLoads is time.LoadLocation counting its calls per zone.
type countingLoads struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *countingLoads) count(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[name]
}

func (c *countingLoads) load(name string) (*time.Location, error) {
	c.mu.Lock()
	c.n[name]++
	c.mu.Unlock()
	return time.LoadLocation(name)
}

// The schedules page reads each zone from the zone database once per Handler, not once
// per row and request; concurrent requests share the cache (go test -race).
func TestSchedulesPageLoadsEachZoneOnce(t *testing.T) {
	t.Parallel()
	db := testdb.Open(t, "sqlite")
	p := am.New(am.Config{})
	if err := errors.Join(db.Use(p), p.Migrate(context.Background(), db), am.Register[tick](p, nop{})); err != nil {
		t.Fatal(err)
	}
	for i, zone := range []string{"Europe/Paris", "Europe/Paris", "Europe/Paris", "America/New_York"} {
		if _, err := am.Schedule(t.Context(), db, tick{}, fmt.Sprintf("0 %d * * *", i), am.InZone(zone)); err != nil {
			t.Fatal(err)
		}
	}
	h := New(p)
	loads := &countingLoads{n: map[string]int{}}
	h.zones = newZoneCache(loads.load)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/schedules", nil))
			if body := rec.Body.String(); rec.Code != http.StatusOK || !strings.Contains(body, " CET") || !strings.Contains(body, " EST") {
				t.Errorf("schedules page: %d, without the zones' times:\n%s", rec.Code, body)
			}
		})
	}
	wg.Wait()
	// Two requests may miss the cache at once and both load; never one load per row.
	paris, ny := loads.count("Europe/Paris"), loads.count("America/New_York")
	if paris < 1 || paris > 4 || ny < 1 || ny > 4 {
		t.Fatalf("zone loads: Europe/Paris %d, America/New_York %d for 4 requests of 4 rows", paris, ny)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/schedules", nil))
	if rec.Code != http.StatusOK || loads.count("Europe/Paris") != paris {
		t.Fatalf("a later request: %d, loaded Europe/Paris again: %d → %d", rec.Code, paris, loads.count("Europe/Paris"))
	}
}

// The cache stays bounded however many zones rows name (a hand-edited table), and
// remembers failures too.
func TestZoneCacheIsBounded(t *testing.T) {
	t.Parallel()
	loads := &countingLoads{n: map[string]int{}}
	c := newZoneCache(loads.load)
	for i := range 10 * zonesKept {
		if _, err := c.location(fmt.Sprintf("Nowhere/%d", i)); err == nil {
			t.Fatal("a made-up zone loaded")
		}
		if len(c.m) > zonesKept {
			t.Fatalf("%d zones cached, bound %d", len(c.m), zonesKept)
		}
	}
	name := fmt.Sprintf("Nowhere/%d", 10*zonesKept-1)
	if _, err := c.location(name); err == nil || loads.count(name) != 1 {
		t.Fatalf("a failed zone was loaded %d times, want 1 (cached): %v", loads.count(name), err)
	}
	if loc, err := c.location("Asia/Tokyo"); err != nil || loc.String() != "Asia/Tokyo" {
		t.Fatalf("Asia/Tokyo: %v, %v", loc, err)
	}
}
