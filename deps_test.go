package asyncmonolith_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestSQLiteOnlyProgramLinksNoOtherDriver lists the packages a program using only SQLite
// links (testdata/sqliteonly): neither pgx nor go-sql-driver/mysql may be among them, as
// the library classifies drivers' errors and reaches pgx for LISTEN without importing them.
func TestSQLiteOnlyProgramLinksNoOtherDriver(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", "./testdata/sqliteonly").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	for _, want := range []string{"github.com/asyncmonolith/asyncmonolith", "gorm.io/driver/sqlite", "github.com/mattn/go-sqlite3"} {
		if !slices.Contains(deps, want) {
			t.Errorf("%s is not among the program's dependencies: the program does not test what it should", want)
		}
	}
	for _, d := range deps {
		for _, banned := range []string{"github.com/jackc/pgx", "github.com/go-sql-driver/mysql"} {
			if strings.HasPrefix(d, banned) {
				t.Errorf("a SQLite-only program links %s", d)
			}
		}
	}
}
