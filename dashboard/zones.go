package dashboard

import (
	"sync"
	"time"
)

// zonesKept bounds a Handler's zone cache: schedules use a few zones, and a table of hand-
// written rows naming many must not grow it without end.
const zonesKept = 64

// zoneCache remembers time.LoadLocation's answers (a zone that fails too), so that a page
// of schedules does not read the zone database for every row of every request. It is safe
// for concurrent use; when full it starts over.
type zoneCache struct {
	load func(string) (*time.Location, error)
	mu   sync.Mutex
	m    map[string]zoneEntry
}

type zoneEntry struct {
	loc *time.Location
	err error
}

func newZoneCache(load func(string) (*time.Location, error)) *zoneCache {
	return &zoneCache{load: load, m: map[string]zoneEntry{}}
}

// location is time.LoadLocation(name), cached.
func (c *zoneCache) location(name string) (*time.Location, error) {
	c.mu.Lock()
	e, ok := c.m[name]
	c.mu.Unlock()
	if ok {
		return e.loc, e.err
	}
	loc, err := c.load(name)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= zonesKept {
		clear(c.m)
	}
	c.m[name] = zoneEntry{loc, err}
	return loc, err
}
