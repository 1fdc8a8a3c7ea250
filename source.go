package asyncmonolith

import (
	"database/sql"

	"gorm.io/gorm"
)

// Reading from the source. Resolver plugins (gorm.io/plugin/dbresolver and its like) send
// a query outside a transaction to a replica, which may lag behind, and leave every
// statement of a transaction on the connection it was begun on. A transaction the plugin
// begins is begun on the pool the *gorm.DB was opened on, as its processors' are: so the
// plugin's own reads run in a transaction, and the pool the *gorm.DB was opened on must be
// the source (dbresolver's default when Config.Sources is empty).

// readOnSource runs fn, which only reads, on db's transaction, or in a transaction of its
// own where reading in one leaves writers alone. On SQLite, where a transaction takes the
// write lock, and on a *gorm.DB without the plugin, fn runs outside one: a resolver there
// picks where it reads.
func readOnSource(db *gorm.DB, fn func(tx *gorm.DB) error) error {
	if inTx(db) {
		return fn(db)
	}
	if p, err := pluginOf(db); err != nil || p.dialect == nil || !p.dialect.LockFreeReadTx() {
		return fn(db)
	}
	// REPEATABLE READ, read only: the statements of one operation (Stats reads two tables)
	// see one snapshot, so a message moving from pending to poisoned between them is not
	// counted twice, and none locks (named explicitly: under a session default of
	// SERIALIZABLE, InnoDB makes every plain SELECT in a transaction a locking read, which
	// would wait behind the rows a processor is claiming).
	return db.Transaction(fn, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
}
