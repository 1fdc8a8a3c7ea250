package dialect

// Names are the canonical names of the supported databases, in the order they are
// documented.
var Names = []string{"postgres", "mysql", "sqlite"}

// Canonical returns the canonical name (one of Names) of the database called name —
// a GORM dialector's name ("postgres", "mysql", "sqlite", "sqlite3") or a common alias
// ("postgresql", "pgx", "mariadb") — and false for an unsupported one. It is the one
// place that maps names: For, package migrations and the command line all use it.
func Canonical(name string) (string, bool) {
	switch name {
	case "postgres", "postgresql", "pgx":
		return "postgres", true
	case "mysql", "mariadb":
		return "mysql", true
	case "sqlite", "sqlite3":
		return "sqlite", true
	}
	return "", false
}
