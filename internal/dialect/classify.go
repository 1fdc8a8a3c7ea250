package dialect

import "strings"

// Classifying the statements an application runs, for the plugin's callbacks and its
// transaction watcher.

// SavepointOp is what a statement does to a transaction's savepoints.
type SavepointOp int

// The statements ParseSavepoint recognises.
const (
	SavepointNone     SavepointOp = iota // not a savepoint statement
	SavepointTake                        // SAVEPOINT x
	SavepointRollback                    // ROLLBACK TO [SAVEPOINT] x
	SavepointRelease                     // RELEASE [SAVEPOINT] x
)

// ParseSavepoint recognizes SAVEPOINT x, ROLLBACK TO [SAVEPOINT] x and RELEASE
// [SAVEPOINT] x, the statements every GORM dialector and SQL database here uses.
func ParseSavepoint(q string) (SavepointOp, string) {
	if len(q) < 10 || (q[0]|0x20 != 's' && q[0]|0x20 != 'r') {
		return SavepointNone, "" // most statements, at the cost of one comparison
	}
	f := strings.Fields(q)
	word := func(i int, w string) bool { return len(f) > i && strings.EqualFold(f[i], w) }
	switch {
	case len(f) == 2 && word(0, "SAVEPOINT"):
		return SavepointTake, f[1]
	case word(0, "ROLLBACK") && word(1, "TO"):
		if word(2, "SAVEPOINT") && len(f) == 4 {
			return SavepointRollback, f[3]
		}
		if len(f) == 3 {
			return SavepointRollback, f[2]
		}
	case word(0, "RELEASE"):
		if word(1, "SAVEPOINT") && len(f) == 3 {
			return SavepointRelease, f[2]
		}
		if len(f) == 2 {
			return SavepointRelease, f[1]
		}
	}
	return SavepointNone, ""
}

// IsDML reports whether an Exec'd statement writes rows (INSERT, UPDATE, DELETE,
// REPLACE, MERGE), the only statements whose affected-row count means rows changed: a
// SELECT reports the rows it read on PostgreSQL, and on SQLite any other statement
// reports the count of the connection's previous write.
func IsDML(q string) bool {
	q = strings.TrimLeft(q, " \t\r\n(")
	end := strings.IndexAny(q, " \t\r\n(")
	if end < 0 {
		end = len(q)
	}
	switch strings.ToUpper(q[:end]) {
	case "INSERT", "UPDATE", "DELETE", "REPLACE", "MERGE":
		return true
	}
	return false
}
