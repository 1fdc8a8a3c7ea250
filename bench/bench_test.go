package main

import (
	"context"
	"database/sql"
	"os"
	"testing"
	"time"
)

// TestQuickRun runs the whole benchmark once with a small N on every reachable database,
// so the benchmark compiles and works in every CI run. It asserts nothing about speed.
func TestQuickRun(t *testing.T) {
	for _, dialect := range []string{"sqlite", "postgres", "mysql"} {
		t.Run(dialect, func(t *testing.T) {
			c := config{dialect: dialect, n: 2000, runs: 1, quick: true, backlog: 1000, rate: 200, latencyDur: 500 * time.Millisecond}
			if dialect != "sqlite" {
				driver := map[string]string{"postgres": "pgx", "mysql": "mysql"}[dialect]
				db, err := sql.Open(driver, serverDSN(c))
				if err == nil {
					err = db.Ping()
					db.Close()
				}
				if err != nil {
					if os.Getenv("CI") == "true" {
						t.Fatalf("%s unreachable under CI: %v", dialect, err)
					}
					t.Skipf("!!! %s unreachable: %v", dialect, err)
				}
			}
			if err := run(context.Background(), c); err != nil {
				t.Fatal(err)
			}
		})
	}
}
