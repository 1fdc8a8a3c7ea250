package asyncmonolith

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"

	"github.com/asyncmonolith/asyncmonolith/internal/dialect"
	"gorm.io/gorm"
)

// QueueStats describes one consumer type on one rail (a consumer's messages are all on
// its rail, unless it moved to another rail while some were stored).
type QueueStats struct {
	ConsumerType string        `json:"consumer_type"`
	Rail         string        `json:"rail"`           // the messages' rail; "" is DefaultRail
	Pending      int64         `json:"pending"`        // rows in consumer_messages
	Running      int64         `json:"running"`        // of which claimed by a processor (pending IS NULL)
	Due          int64         `json:"due"`            // of which due now (a claimed one once its lease has ended)
	OldestDueAge time.Duration `json:"oldest_due_age"` // how long the oldest due message has waited
	Poisoned     int64         `json:"poisoned"`
}

// RailStats sums QueueStats over one rail.
type RailStats struct {
	Rail string `json:"rail"` // "" is DefaultRail
	// Configured is false for a rail this plugin does not run (not in Config.Rails): its
	// messages (written by hand, or by a process configured otherwise) are never fetched
	// here.
	Configured   bool          `json:"configured"`
	Pending      int64         `json:"pending"`
	Running      int64         `json:"running"`
	Due          int64         `json:"due"`
	OldestDueAge time.Duration `json:"oldest_due_age"`
	Poisoned     int64         `json:"poisoned"`
}

// Stats returns, per consumer type and rail, the pending, running, due and poisoned counts
// and the age of the oldest due message, ordered by consumer type, then rail.
func (p *Plugin) Stats(ctx context.Context) ([]QueueStats, error) {
	db, err := p.adminDB(ctx)
	if err != nil {
		return nil, err
	}
	now := p.now()
	// Columns named in tags: the application's NamingStrategy also maps these fields.
	var pending []struct {
		ConsumerType string `gorm:"column:consumer_type"`
		Rail         string `gorm:"column:rail"`
		Pending      int64  `gorm:"column:pending"`
		Running      int64  `gorm:"column:running"`
		Due          int64  `gorm:"column:due"`
		OldestDue    *int64 `gorm:"column:oldest_due"`
	}
	var poisoned []struct {
		ConsumerType string `gorm:"column:consumer_type"`
		Rail         string `gorm:"column:rail"`
		N            int64  `gorm:"column:n"`
	}
	err = readOnSource(db, func(tx *gorm.DB) error {
		// Model names the table for callbacks, as a query built by GORM would.
		if err := tx.Model(&ConsumerMessage{}).Raw(dialect.PendingStats, now.UnixMilli(), now.UnixMilli()).Scan(&pending).Error; err != nil {
			return err
		}
		return tx.Model(&PoisonedMessage{}).Raw(dialect.PoisonedStats).Scan(&poisoned).Error
	})
	if err != nil {
		return nil, p.wrapDBError("stats", err)
	}
	type key struct{ consumer, rail string }
	by := map[key]*QueueStats{}
	get := func(ct, rail string) *QueueStats {
		if s, ok := by[key{ct, rail}]; ok {
			return s
		}
		s := &QueueStats{ConsumerType: ct, Rail: rail}
		by[key{ct, rail}] = s
		return s
	}
	for _, r := range pending {
		s := get(r.ConsumerType, r.Rail)
		s.Pending, s.Running, s.Due = r.Pending, r.Running, r.Due
		if r.OldestDue != nil {
			s.OldestDueAge = now.Sub(time.UnixMilli(*r.OldestDue))
		}
	}
	for _, r := range poisoned {
		get(r.ConsumerType, r.Rail).Poisoned = r.N
	}
	out := make([]QueueStats, 0, len(by))
	for _, s := range by {
		out = append(out, *s)
	}
	sortStats(out)
	return out, nil
}

// StatsByRail returns Stats summed per rail: every rail this plugin runs (DefaultRail
// first, then Config.Rails by name), empty ones included, then any other rail found on
// stored messages (Configured false), by name. OldestDueAge is the rail's oldest.
func (p *Plugin) StatsByRail(ctx context.Context) ([]RailStats, error) {
	stats, err := p.Stats(ctx)
	if err != nil {
		return nil, err
	}
	return p.SumByRail(stats), nil
}

// SumByRail sums stats (as Stats returns them) per rail, as StatsByRail does: a caller that
// shows both reads the database once, and its two views agree.
func (p *Plugin) SumByRail(stats []QueueStats) []RailStats {
	var out []RailStats
	index := map[string]int{}
	for _, name := range p.Rails() {
		index[name] = len(out)
		out = append(out, RailStats{Rail: name, Configured: true})
	}
	var others []string
	for _, s := range stats {
		if _, ok := index[s.Rail]; !ok {
			index[s.Rail] = -1
			others = append(others, s.Rail)
		}
	}
	slices.Sort(others)
	for _, name := range others {
		index[name] = len(out)
		out = append(out, RailStats{Rail: name})
	}
	for _, s := range stats {
		r := &out[index[s.Rail]]
		r.Pending += s.Pending
		r.Running += s.Running
		r.Due += s.Due
		r.Poisoned += s.Poisoned
		r.OldestDueAge = max(r.OldestDueAge, s.OldestDueAge)
	}
	return out
}

func sortStats(s []QueueStats) {
	slices.SortFunc(s, func(a, b QueueStats) int {
		return cmp.Or(strings.Compare(a.ConsumerType, b.ConsumerType), strings.Compare(a.Rail, b.Rail))
	})
}
