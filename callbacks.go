package asyncmonolith

import (
	"fmt"

	"gorm.io/gorm"
)

// Instance keys of one statement's callback chain.
const (
	ownTxKey   = "asyncmonolith:own_tx"
	flushedKey = "asyncmonolith:flushed"
)

// registerCallbacks hooks buffered messages into GORM's create, update and delete chains:
// begin (a transaction of our own where GORM opens none), flush (after the write, before
// GORM commits) and end (commit our transaction; on failure put the messages back).
//
// The begin and end callbacks are anchored to GORM's before/after callbacks, not to
// gorm:begin_transaction: under SkipDefaultTransaction GORM registers no transaction
// callbacks, and constraints naming them would be ignored silently.
func registerCallbacks(db *gorm.DB) error {
	cb := db.Callback()
	errs := []error{
		cb.Create().Before("gorm:before_create").Register("asyncmonolith:begin_create", beginOwnTx),
		cb.Create().After("gorm:after_create").Before("gorm:commit_or_rollback_transaction").Register("asyncmonolith:flush_create", flushBuffer),
		cb.Create().After("gorm:commit_or_rollback_transaction").Register("asyncmonolith:end_create", endWrite),
		cb.Update().Before("gorm:setup_reflect_value").Register("asyncmonolith:begin_update", beginOwnTx),
		cb.Update().After("gorm:after_update").Before("gorm:commit_or_rollback_transaction").Register("asyncmonolith:flush_update", flushBuffer),
		cb.Update().After("gorm:commit_or_rollback_transaction").Register("asyncmonolith:end_update", endWrite),
		cb.Delete().Before("gorm:before_delete").Register("asyncmonolith:begin_delete", beginOwnTx),
		cb.Delete().After("gorm:after_delete").Before("gorm:commit_or_rollback_transaction").Register("asyncmonolith:flush_delete", flushBuffer),
		cb.Delete().After("gorm:commit_or_rollback_transaction").Register("asyncmonolith:end_delete", endWrite),
	}
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("asyncmonolith: register callbacks: %w", err)
		}
	}
	return nil
}

// beginOwnTx opens a transaction when messages are buffered and GORM will not open one
// (SkipDefaultTransaction on the session or globally).
func beginOwnTx(db *gorm.DB) {
	if db.Error != nil || inTx(db) {
		return
	}
	b := bufferOf(db)
	if b == nil || b.len() == 0 {
		return
	}
	tx := db.Session(&gorm.Session{NewDB: true}).Begin()
	if tx.Error != nil {
		_ = db.AddError(fmt.Errorf("asyncmonolith: begin transaction for buffered messages: %w", tx.Error))
		return
	}
	db.Statement.ConnPool = tx.Statement.ConnPool
	db.InstanceSet(ownTxKey, tx)
}

type flushed struct {
	b    *buffer
	rows []ConsumerMessage
}

// flushBuffer writes the buffered messages in the write's transaction.
func flushBuffer(db *gorm.DB) {
	if db.Error != nil {
		return
	}
	b := bufferOf(db)
	if b == nil {
		return
	}
	rows := b.take()
	if len(rows) == 0 {
		return
	}
	p, err := pluginOf(db)
	if err == nil {
		err = p.insertRows(db, rows)
	}
	if err != nil {
		b.putBack(rows)
		_ = db.AddError(err)
		return
	}
	db.InstanceSet(flushedKey, flushed{b, rows})
}

// endWrite commits or rolls back our own transaction, puts flushed messages back when the
// write failed, and wakes the processors when it committed.
func endWrite(db *gorm.DB) {
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
	if p, err := pluginOf(db); err == nil {
		p.wake.notify()
	}
}
