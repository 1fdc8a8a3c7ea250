package main

import (
	"strings"
	"testing"
	"time"
)

// TestRailsSection runs the rails section once, small, on SQLite: every fast message runs
// once (measureRails fails otherwise) and the slow rail is saturated when the run ends. It
// asserts nothing about speed.
func TestRailsSection(t *testing.T) {
	defer func(d time.Duration) { *railsSlowWait = d }(*railsSlowWait)
	*railsSlowWait = 300 * time.Millisecond
	c := config{dialect: "sqlite", runs: 1, waitN: 300, rate: 100, latencyDur: 500 * time.Millisecond}
	schema, drop, err := newSchema(c, "bench_rails_")
	if err != nil {
		t.Fatal(err)
	}
	defer drop()
	var r report
	if err := runRails(c, schema, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.rows) != 9 || !strings.Contains(r.rows[0][2], "saturated (1 of 1 runs") {
		t.Fatalf("rails section rows: %q", r.rows)
	}
}
