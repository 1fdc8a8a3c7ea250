package dialect

import (
	"strings"
	"unicode/utf8"
)

// ValidText reports whether s is valid UTF-8 without NUL bytes: what every text column of
// every supported database stores as given.
func ValidText(s string) bool { return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 }

// TextStorable is ValidText on PostgreSQL, whose text holds neither NUL bytes nor invalid
// UTF-8 and refuses a query that compares with such a value.
func (postgres) TextStorable(s string) bool { return ValidText(s) }

// TextStorable is true on MySQL/MariaDB: a comparison with any string runs.
func (mysqlDialect) TextStorable(string) bool { return true }

// TextStorable is true on SQLite, whose text holds any bytes.
func (sqlite) TextStorable(string) bool { return true }

// rowCompare is the keyset condition as one row comparison "(a, b) > (?, ?)", which
// PostgreSQL and SQLite read as a range of the index.
func rowCompare(cols []string, op string, vals []any) (string, []any) {
	return "(" + strings.Join(cols, ", ") + ") " + op + " (" + strings.Repeat("?, ", len(cols)-1) + "?)", vals
}

func (postgres) Keyset(cols []string, op string, vals []any) (string, []any) {
	return rowCompare(cols, op, vals)
}

func (sqlite) Keyset(cols []string, op string, vals []any) (string, []any) {
	return rowCompare(cols, op, vals)
}

// Keyset is spelled out as "a > ? OR (a = ? AND b > ?)" on MySQL and MariaDB: they scan a
// row comparison's index from its start (MariaDB 10.11 read 150,050 entries for a page
// after row 150,000), and read this form as a range.
func (mysqlDialect) Keyset(cols []string, op string, vals []any) (string, []any) {
	var ors []string
	var args []any
	for i := range cols {
		var and []string
		for j := range i {
			and = append(and, cols[j]+" = ?")
			args = append(args, vals[j])
		}
		ors = append(ors, "("+strings.Join(append(and, cols[i]+" "+op+" ?"), " AND ")+")")
		args = append(args, vals[i])
	}
	return "(" + strings.Join(ors, " OR ") + ")", args
}
