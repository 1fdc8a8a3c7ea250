package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "am-cli-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "asyncmonolith")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		panic(string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cli runs the built binary and returns stdout, stderr and the exit code.
func cli(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

type Job struct {
	N int `json:"n"`
}

func TestCLI(t *testing.T) {
	t.Parallel()
	for _, dialect := range testdb.Dialects {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			dsn, db := testdb.OpenDSN(t, dialect)
			base := []string{"--db", dialect, "--dsn", dsn}
			run := func(args ...string) (string, string, int) {
				return cli(t, append(append([]string{}, base...), args...)...)
			}

			if out, errOut, code := run("migrate", "up"); code != 0 || !strings.Contains(out, "schema version") {
				t.Fatalf("migrate up: %d %s %s", code, out, errOut)
			}
			// Poison two messages through the library.
			p := am.New(am.Config{MaxAttempts: 1})
			if err := db.Use(p); err != nil {
				t.Fatal(err)
			}
			if err := am.Register[Job](p, am.ConsumerFunc[Job](func(context.Context, *am.Message[Job]) error {
				return errors.New("boom")
			}), am.WithName("Failer")); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if err := am.ProduceNow(context.Background(), db, Job{}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := p.ProcessBatch(context.Background()); err != nil {
				t.Fatal(err)
			}
			if _, err := am.Schedule(t.Context(), db, Job{}, "@daily", am.Tag("nightly")); err != nil {
				t.Fatal(err)
			}

			out, _, code := run("--json", "stats")
			var stats struct{ Consumers []am.QueueStats }
			if code != 0 || json.Unmarshal([]byte(out), &stats) != nil || len(stats.Consumers) != 1 || stats.Consumers[0].Poisoned != 2 {
				t.Fatalf("stats: %d %s", code, out)
			}
			out, _, code = run("--json", "poisoned", "list", "--consumer", "Failer")
			var poisoned []am.PoisonedMessage
			if code != 0 || json.Unmarshal([]byte(out), &poisoned) != nil || len(poisoned) != 2 || poisoned[0].LastError != "boom" {
				t.Fatalf("poisoned list: %d %s", code, out)
			}
			if out, _, code := run("poisoned", "show", poisoned[0].ID); code != 0 || !strings.Contains(out, "boom") {
				t.Fatalf("poisoned show: %d %s", code, out)
			}
			if _, _, code := run("poisoned", "show", "no-such-id"); code != 3 {
				t.Fatalf("show of a missing id: exit %d, want 3", code)
			}
			if out, _, code := run("poisoned", "requeue", "--delay", "1m", poisoned[0].ID); code != 0 || !strings.Contains(out, "requeued 1") {
				t.Fatalf("requeue: %d %s", code, out)
			}
			var back am.ConsumerMessage
			if err := db.Where("id = ?", poisoned[0].ID).Take(&back).Error; err != nil || back.Attempts != 0 {
				t.Fatalf("requeued row: %+v %v", back, err)
			}
			if out, _, code := run("poisoned", "delete", poisoned[1].ID); code != 0 || !strings.Contains(out, "deleted 1") {
				t.Fatalf("delete: %d %s", code, out)
			}
			if _, _, code := run("poisoned", "purge"); code != 2 {
				t.Fatalf("purge without --older-than: exit %d, want 2", code)
			}
			if out, _, code := run("schedules", "list", "--tag", "nightly"); code != 0 || !strings.Contains(out, "@daily") {
				t.Fatalf("schedules list: %d %s", code, out)
			}
			if _, _, code := run("migrate", "down"); code != 0 {
				t.Fatalf("migrate down: %d", code)
			}
			if db.Migrator().HasTable("consumer_messages") {
				t.Fatal("migrate down left consumer_messages")
			}
		})
	}
}

func TestCLIUsage(t *testing.T) {
	t.Parallel()
	if out, _, code := cli(t, "migrate", "sql", "--dialect", "mysql"); code != 0 || !strings.Contains(out, "CREATE TABLE `consumer_messages`") {
		t.Fatalf("migrate sql: %d %s", code, out)
	}
	if _, _, code := cli(t, "migrate", "sql", "--dialect", "oracle"); code != 2 {
		t.Fatalf("unknown dialect: exit %d, want 2", code)
	}
	if _, errOut, code := cli(t, "bogus"); code != 2 || !strings.Contains(errOut, "usage") {
		t.Fatalf("unknown command: %d %s", code, errOut)
	}
	if _, errOut, code := cli(t, "poisoned", "list", "--help"); code != 0 || !strings.Contains(errOut, "-older-than") {
		t.Fatalf("--help: %d %s", code, errOut)
	}
	if _, _, code := cli(t, "stats"); code != 2 {
		t.Fatalf("stats without a database: exit %d, want 2", code)
	}
}
