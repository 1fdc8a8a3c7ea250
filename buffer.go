package asyncmonolith

import (
	"log/slog"
	"runtime"
	"sort"
	"sync"

	"gorm.io/gorm"
)

// bufferKey holds the *buffer in a session's Statement.Settings, which GORM copies to every
// session chained from it (and into the transactions begun on it).
const bufferKey = "asyncmonolith:buffer"

// buffer holds the messages produced on a session outside a transaction until a write on
// that session flushes them.
type buffer struct {
	mu   sync.Mutex
	rows []newRow
	leak *leakReport
}

// leakReport is kept apart from the buffer so that a cleanup can read it after the buffer
// is unreachable and report messages that were never flushed.
type leakReport struct {
	mu    sync.Mutex
	types map[string]int
	log   *slog.Logger
}

func newBuffer(log *slog.Logger) *buffer {
	b := &buffer{leak: &leakReport{types: map[string]int{}, log: log}}
	runtime.AddCleanup(b, func(l *leakReport) { l.report() }, b.leak)
	return b
}

func (l *leakReport) report() {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n int
	types := make([]string, 0, len(l.types))
	for t, c := range l.types {
		n += c
		types = append(types, t)
	}
	if n == 0 {
		return
	}
	sort.Strings(types)
	l.log.Error("asyncmonolith: produced messages were never written: the session they were buffered on was dropped without a write that changed rows (Create, Save, Update, Delete, Exec) or a Flush; call Discard to drop them on purpose",
		"count", n, "payload_types", types)
}

func (l *leakReport) adjust(rows []newRow, sign int) {
	l.mu.Lock()
	for _, r := range rows {
		l.types[r.PayloadType] += sign
		if l.types[r.PayloadType] == 0 {
			delete(l.types, r.PayloadType)
		}
	}
	l.mu.Unlock()
}

func (b *buffer) add(rows []newRow) {
	b.mu.Lock()
	b.rows = append(b.rows, rows...)
	b.mu.Unlock()
	b.leak.adjust(rows, 1)
}

// take empties the buffer and returns what it held.
func (b *buffer) take() []newRow {
	b.mu.Lock()
	rows := b.rows
	b.rows = nil
	b.mu.Unlock()
	b.leak.adjust(rows, -1)
	return rows
}

// putBack returns rows whose write failed, ahead of any produced since.
func (b *buffer) putBack(rows []newRow) {
	if len(rows) == 0 {
		return
	}
	b.mu.Lock()
	b.rows = append(rows[:len(rows):len(rows)], b.rows...)
	b.mu.Unlock()
	b.leak.adjust(rows, 1)
}

func (b *buffer) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.rows)
}

func bufferOf(db *gorm.DB) *buffer {
	if db == nil || db.Statement == nil {
		return nil
	}
	v, ok := db.Get(bufferKey)
	if !ok {
		return nil
	}
	b, _ := v.(*buffer)
	return b
}
