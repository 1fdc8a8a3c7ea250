package testdb

import "gorm.io/gorm"

// ReadsTo returns a GORM plugin that does the least a read-replica plugin does
// (gorm.io/plugin/dbresolver's rule, without it): every query outside a transaction goes
// to the replica's pool; writes and transactions stay where they are.
func ReadsTo(replica gorm.ConnPool) gorm.Plugin { return readsTo{replica} }

type readsTo struct{ replica gorm.ConnPool }

func (readsTo) Name() string { return "testdb:reads_to_replica" }

func (r readsTo) Initialize(db *gorm.DB) error {
	route := func(db *gorm.DB) {
		if _, inTx := db.Statement.ConnPool.(gorm.TxCommitter); !inTx {
			db.Statement.ConnPool = r.replica
		}
	}
	if err := db.Callback().Query().Before("*").Register("testdb:reads_to_replica", route); err != nil {
		return err
	}
	return db.Callback().Row().Before("*").Register("testdb:reads_to_replica", route)
}
