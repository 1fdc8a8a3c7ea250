package dialect

import (
	"strconv"
	"strings"
)

// PerRow is an UpdateLocated value that differs by row: Values[i] for the row whose id is
// IDs[i] (every updated row's id must be among IDs). A completion that reschedules failed
// messages at jittered times sets them all in one statement with it, instead of one
// statement per time.
type PerRow struct {
	IDs    []string
	Values []int64
}

// setValue writes "col = value" for an UPDATE … SET: a placeholder from ph for a plain
// value, a CASE on idCol for a PerRow (ph is called for each of its ids and values, in
// order).
func setValue(b *strings.Builder, col, idCol string, v any, ph func(any) string) {
	b.WriteString(col + " = ")
	pr, ok := v.(PerRow)
	if !ok {
		b.WriteString(ph(v))
		return
	}
	b.WriteString("CASE " + idCol)
	for i, id := range pr.IDs {
		b.WriteString(" WHEN " + ph(id) + " THEN " + ph(pr.Values[i]))
	}
	b.WriteString(" END")
}

// pgSetValue is setValue for PostgreSQL: a PerRow is two array parameters, whatever its
// size, looked up by the row's id.
func pgSetValue(b *strings.Builder, col string, v any, args *[]any) {
	pr, ok := v.(PerRow)
	if !ok {
		*args = append(*args, v)
		b.WriteString(col + " = $" + strconv.Itoa(len(*args)))
		return
	}
	*args = append(*args, pr.IDs, pr.Values)
	n := len(*args)
	b.WriteString(col + " = ($" + strconv.Itoa(n) + "::bigint[])[array_position($" + strconv.Itoa(n-1) + "::text[], id::text)]")
}
