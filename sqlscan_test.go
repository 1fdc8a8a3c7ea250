package asyncmonolith_test

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// sqlText matches SQL in a string: a keyword in capitals as a whole word (or a function
// call such as COUNT( ). The root package's error messages and logs are in lower case
// with, at most, a capitalised first word, so the rule needs no allow-list.
var sqlText = regexp.MustCompile(`\b(SELECT|INSERT|UPDATE|DELETE|MERGE|REPLACE INTO|VALUES|RETURNING|` +
	`FROM|WHERE|JOIN|GROUP BY|ORDER BY|LIMIT|OFFSET|HAVING|UNION|WITH|` +
	`SET|ON CONFLICT|ON DUPLICATE KEY|FOR UPDATE|SKIP LOCKED|NOWAIT|LOCK IN SHARE MODE|` +
	`SAVEPOINT|RELEASE|ROLLBACK|COMMIT|BEGIN|` +
	`CREATE|ALTER|DROP|TRUNCATE|INDEX|TRIGGER|PRAGMA|LISTEN|NOTIFY|` +
	`CASE|WHEN|NULLIF|COALESCE|COUNT|SUM|MIN|MAX|CAST|IS NULL|IS NOT NULL)\b`)

// TestNoSQLOutsideTheDialect scans the string literals of the root package's non-test
// source for SQL: every statement is internal/dialect's (or migrations/'s). The rule, which
// allows nothing by name: no string literal holds an SQL keyword in capitals. What it
// leaves to the root package is what GORM's query builder takes besides SQL: column
// conditions with placeholders (db.Where("id = ?", id), "id IN ?"), column lists and orders
// ("available_after, id"), column names; locks and whole statements come from the dialect
// (dialect.SkipLocked, dialect.PendingStats). Struct tags are not scanned: they are the
// models' schema for AutoMigrate (a check constraint among them), which migrations/ holds
// as files.
func TestNoSQLOutsideTheDialect(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	scanned := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		scanned++
		tags := map[*ast.BasicLit]bool{}
		ast.Inspect(f, func(n ast.Node) bool {
			if fld, ok := n.(*ast.Field); ok && fld.Tag != nil {
				tags[fld.Tag] = true
			}
			lit, ok := n.(*ast.BasicLit)
			if ok && tags[lit] {
				return true
			}
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatalf("%s: %v", fset.Position(lit.Pos()), err)
			}
			if m := sqlText.FindString(s); m != "" {
				t.Errorf("%s: SQL (%s) in the root package, which leaves SQL to internal/dialect: %q", fset.Position(lit.Pos()), m, s)
			}
			return true
		})
	}
	if scanned < 10 {
		t.Fatalf("scanned %d files: not the root package's source?", scanned)
	}
}

// TestSQLScanFindsSQL keeps the scan honest: it flags each kind of SQL the root package
// once held, and none of its kinds of messages.
func TestSQLScanFindsSQL(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"INSERT INTO consumer_messages (", ") VALUES ", "SKIP LOCKED", "UPDATE",
		"id, NULLIF(insert_id, id), trace_id", "SAVEPOINT", "RELEASE", " FROM consumer_messages WHERE id IN (",
		"SUM(CASE WHEN available_after <= ? THEN 1 ELSE 0 END) AS due", "consumer_type, COUNT(*) AS n",
		"DELETE FROM poisoned_messages", "SELECT 1", "pending IS NOT NULL",
	} {
		if !sqlText.MatchString(s) {
			t.Errorf("the scan misses %q", s)
		}
	}
	for _, s := range []string{
		"id = ?", "id IN ?", "available_after, created_at, id", "delete completed messages",
		"the session was dropped without a write that changed rows (Create, Save, Update, Delete, Exec)",
		"asyncmonolith: insert id is pending again; message left poisoned",
	} {
		if m := sqlText.FindString(s); m != "" {
			t.Errorf("the scan flags %q (%s)", s, m)
		}
	}
}

// maxFileLines is the most lines a .go file of the root package holds (issue 16).
const maxFileLines = 400

// TestNoFileOver400Lines: no .go file in the root package, its tests included, is over
// maxFileLines lines; one that grows past them is split by what it holds (rails_test.go and
// rails_limit_test.go), moving whole functions. It names each file over the limit.
func TestNoFileOver400Lines(t *testing.T) {
	t.Parallel()
	// The count is wc -l's, and a last line without its newline counts too.
	for src, want := range map[string]int{"": 0, "a": 1, "a\n": 1, "a\nb": 2, strings.Repeat("x\n", maxFileLines+1): maxFileLines + 1} {
		if got := lineCount([]byte(src)); got != want {
			t.Fatalf("lineCount of %d bytes = %d, want %d", len(src), got, want)
		}
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	sources, tests := 0, 0
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(name, "_test.go") {
			tests++
		} else {
			sources++
		}
		if n := lineCount(data); n > maxFileLines {
			t.Errorf("%s: %d lines, over %d: split it by what it holds, moving whole functions", name, n, maxFileLines)
		}
	}
	if sources < 10 || tests < 20 {
		t.Fatalf("found %d source and %d test files: not the root package?", sources, tests)
	}
}

// lineCount counts the lines of a file's text.
func lineCount(b []byte) int {
	n := bytes.Count(b, []byte("\n"))
	if len(b) > 0 && b[len(b)-1] != '\n' {
		n++
	}
	return n
}
