package asyncmonolith

import (
	"fmt"

	"github.com/asyncmonolith/asyncmonolith/internal/dialect"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"
)

// Instance keys of one statement's callback chain.
const (
	ownTxKey   = "asyncmonolith:own_tx"
	flushedKey = "asyncmonolith:flushed"
)

// writeKind is the GORM callback chain a flush runs in.
type writeKind int

const (
	writeCreate writeKind = iota
	writeUpdate
	writeDelete
	writeRaw // Exec
)

// registerCallbacks hooks buffered messages into GORM's create, update, delete and raw
// (Exec) chains: begin (a transaction of our own where GORM opens none), flush (after the
// write, before GORM commits) and end (commit our transaction; on failure put the messages
// back).
//
// The begin and end callbacks are anchored to GORM's before/after callbacks, not to
// gorm:begin_transaction: under SkipDefaultTransaction GORM registers no transaction
// callbacks, and constraints naming them would be ignored silently. They are registered on
// the bound *gorm.DB's callbacks only (which its sessions and transactions share), as method
// values: a *gorm.DB opened from a copy of its config has callbacks of its own, without
// these, and cannot Produce (pluginOf).
func (p *Plugin) registerCallbacks(db *gorm.DB) error {
	cb := db.Callback()
	errs := []error{
		cb.Create().Before("gorm:before_create").Register("asyncmonolith:begin_create", beginOwnTx(writeCreate)),
		cb.Create().After("gorm:after_create").Before("gorm:commit_or_rollback_transaction").Register("asyncmonolith:flush_create", p.flushBuffer(writeCreate)),
		cb.Create().After("gorm:commit_or_rollback_transaction").Register("asyncmonolith:end_create", p.endWrite),
		cb.Update().Before("gorm:setup_reflect_value").Register("asyncmonolith:begin_update", beginOwnTx(writeUpdate)),
		cb.Update().After("gorm:after_update").Before("gorm:commit_or_rollback_transaction").Register("asyncmonolith:flush_update", p.flushBuffer(writeUpdate)),
		cb.Update().After("gorm:commit_or_rollback_transaction").Register("asyncmonolith:end_update", p.endWrite),
		cb.Delete().Before("gorm:before_delete").Register("asyncmonolith:begin_delete", beginOwnTx(writeDelete)),
		cb.Delete().After("gorm:after_delete").Before("gorm:commit_or_rollback_transaction").Register("asyncmonolith:flush_delete", p.flushBuffer(writeDelete)),
		cb.Delete().After("gorm:commit_or_rollback_transaction").Register("asyncmonolith:end_delete", p.endWrite),
		cb.Raw().Before("gorm:raw").Register("asyncmonolith:begin_raw", beginOwnTx(writeRaw)),
		cb.Raw().After("gorm:raw").Register("asyncmonolith:flush_raw", p.flushBuffer(writeRaw)),
		cb.Raw().After("asyncmonolith:flush_raw").Register("asyncmonolith:end_raw", p.endWrite),
	}
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("asyncmonolith: register callbacks: %w", err)
		}
	}
	return nil
}

// beginOwnTx opens a transaction where GORM will not (SkipDefaultTransaction on the
// session or globally; Exec never has one) and a message may be written with the write:
// messages are buffered on the session, or the model has hooks for this write, in which a
// Produce must commit with the write rather than be buffered on the hook's session and
// dropped.
func beginOwnTx(kind writeKind) func(db *gorm.DB) {
	return func(db *gorm.DB) {
		if db.Error != nil || inTx(db) || (kind == writeRaw && !dialect.IsDML(db.Statement.SQL.String())) {
			return
		}
		if b := bufferOf(db); b == nil || b.len() == 0 {
			if kind == writeRaw || !db.SkipDefaultTransaction || db.Statement.SkipHooks || !hasHooks(db.Statement.Schema, kind) {
				return
			}
		}
		tx := db.Session(&gorm.Session{NewDB: true}).Begin()
		if tx.Error != nil {
			_ = db.AddError(fmt.Errorf("asyncmonolith: begin a transaction for the write's messages: %w", tx.Error))
			return
		}
		db.Statement.ConnPool = tx.Statement.ConnPool
		db.InstanceSet(ownTxKey, tx)
	}
}

// hasHooks reports whether models of s have GORM hooks that run in a write of kind.
func hasHooks(s *schema.Schema, kind writeKind) bool {
	if s == nil {
		return false
	}
	switch kind {
	case writeCreate:
		return s.BeforeSave || s.BeforeCreate || s.AfterCreate || s.AfterSave
	case writeUpdate:
		return s.BeforeSave || s.BeforeUpdate || s.AfterUpdate || s.AfterSave
	case writeDelete:
		return s.BeforeDelete || s.AfterDelete
	}
	return false
}

type flushed struct {
	b    *buffer
	rows []newRow
}

// flushBuffer writes the buffered messages in the write's transaction when the write
// changed rows. One that changed none announces nothing and leaves them buffered for the
// write that does: an Update, Delete or Exec that affected no row, an Exec of anything but
// an INSERT, UPDATE, DELETE, REPLACE or MERGE, a Create whose ON CONFLICT DO NOTHING
// skipped its rows. (GORM's Save runs an UPDATE, then an INSERT when the UPDATE matched
// nothing: the messages go with the INSERT.)
func (p *Plugin) flushBuffer(kind writeKind) func(db *gorm.DB) {
	return func(db *gorm.DB) {
		if db.Error != nil {
			return
		}
		b := bufferOf(db)
		if b == nil || !wroteSomething(db, kind) {
			return
		}
		rows := b.take()
		if len(rows) == 0 {
			return
		}
		if err := p.insertRows(db, rows); err != nil {
			b.putBack(rows)
			_ = db.AddError(err)
			return
		}
		p.settleWith(db, b, rows)
	}
}

// settleWith arranges for rows just written on db's transaction to go back to b if that
// transaction (or the savepoint they were written under) rolls back.
func (p *Plugin) settleWith(db *gorm.DB, b *buffer, rows []newRow) {
	if w := watchedOf(db.Statement.ConnPool); w != nil {
		w.track(p, b, rows)
		return
	}
	// A transaction begun where the session's pool was replaced (another plugin's
	// resolver): only one this statement opened itself has an outcome we can see.
	_, own := db.InstanceGet(ownTxKey)
	_, started := db.InstanceGet("gorm:started_transaction")
	if own || started {
		db.InstanceSet(flushedKey, flushed{b, rows})
		return
	}
	p.wake.Notify() // the commit is still ahead: woken processors retry briefly
}

// wroteSomething reports whether the write of kind on db changed rows, so that the
// messages announcing it are due.
func wroteSomething(db *gorm.DB, kind writeKind) bool {
	if db.RowsAffected > 0 {
		return kind != writeRaw || dialect.IsDML(db.Statement.SQL.String())
	}
	if kind != writeCreate {
		return false
	}
	// An upsert (Save's INSERT, ON CONFLICT DO UPDATE) leaves the row as asked whether it
	// inserted, updated or found it so: MySQL reports 0 rows for the last.
	c, ok := db.Statement.Clauses[clause.OnConflict{}.Name()]
	if !ok {
		return true
	}
	oc, ok := c.Expression.(clause.OnConflict)
	return !ok || !skipsConflicts(oc)
}

// skipsConflicts reports whether oc leaves a conflicting row alone: DO NOTHING, which
// GORM writes for MySQL as an update of the primary key to itself.
func skipsConflicts(oc clause.OnConflict) bool {
	if oc.DoNothing {
		return true
	}
	if oc.UpdateAll || len(oc.DoUpdates) == 0 {
		return false
	}
	for _, a := range oc.DoUpdates {
		if v, ok := a.Value.(clause.Column); !ok || v != a.Column {
			return false
		}
	}
	return true
}

// endWrite commits or rolls back our own transaction, puts flushed messages back when the
// write failed, and wakes the processors when it committed.
func (p *Plugin) endWrite(db *gorm.DB) {
	if v, ok := db.InstanceGet(ownTxKey); ok {
		tx := v.(*gorm.DB)
		if db.Error == nil {
			if err := tx.Commit().Error; err != nil {
				_ = db.AddError(fmt.Errorf("asyncmonolith: commit: %w", err))
			}
		} else {
			tx.Rollback()
		}
	}
	v, ok := db.InstanceGet(flushedKey)
	if !ok {
		return
	}
	f := v.(flushed)
	if db.Error != nil {
		f.b.putBack(f.rows)
		return
	}
	p.wake.Notify()
}
