package asyncmonolith_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"testing"
)

// TestNoSleepInTests: the root package's tests wait on conditions and move the test
// clock; none sleeps on the wall clock (issue 16). It fails on every time.Sleep, called or
// passed as a value, under any import name of package time.
func TestNoSleepInTests(t *testing.T) {
	t.Parallel()
	// The check itself catches a sleep under another import name.
	if got := sleeps(t, "x_test.go", "package x\nimport tm \"time\"\nfunc f() { tm.Sleep(1); g(tm.Sleep) }\nfunc g(func(tm.Duration)) {}\n"); len(got) != 2 {
		t.Fatalf("the check found %d of the 2 sleeps of a sample: %v", len(got), got)
	}
	files, err := filepath.Glob("*_test.go")
	if err != nil || len(files) < 20 {
		t.Fatalf("found %d test files (%v)", len(files), err)
	}
	for _, f := range files {
		for _, pos := range sleeps(t, f, nil) {
			t.Errorf("%s: time.Sleep in a test: wait on a condition or a channel, or advance the test clock (clockwait_test.go)", pos)
		}
	}
}

// sleeps returns the positions of time.Sleep in a Go file (src, or the file named).
func sleeps(t *testing.T, name string, src any) []token.Position {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, name, src, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	var timeName string
	for _, imp := range f.Imports {
		if path, _ := strconv.Unquote(imp.Path.Value); path == "time" {
			timeName = "time"
			if imp.Name != nil {
				timeName = imp.Name.Name
			}
		}
	}
	if timeName == "" {
		return nil
	}
	var found []token.Position
	ast.Inspect(f, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok && sel.Sel.Name == "Sleep" {
			if id, ok := sel.X.(*ast.Ident); ok && id.Name == timeName {
				found = append(found, fset.Position(sel.Pos()))
			}
		}
		return true
	})
	return found
}
