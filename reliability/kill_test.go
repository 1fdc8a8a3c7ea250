package reliability_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

// TestMain doubles as the worker process of TestProcessKilled: with AM_REL_CHILD set, it
// runs processors until killed.
func TestMain(m *testing.M) {
	if os.Getenv("AM_REL_CHILD") != "" {
		os.Exit(child())
	}
	os.Exit(m.Run())
}

func child() int {
	dialect, dsn, sideFile := os.Getenv("AM_REL_DIALECT"), os.Getenv("AM_REL_DSN"), os.Getenv("AM_REL_SIDE")
	db, err := open(dialect, dsn)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	f, err := os.OpenFile(sideFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	procs := 2
	if dialect == "sqlite" {
		procs = 1
	}
	p, err := worker(db, am.Config{ConsumerProcessors: procs, ProcessorMinDelay: time.Millisecond, ProcessorMaxDelay: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))},
		func(n int) { fmt.Fprintf(f, "%d\n", n) }) // a side effect outside the database, before the write
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := p.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	select {} // until SIGKILL
}

// TestProcessKilled runs processors in a child process over 20,000 messages and kills it
// with SIGKILL at random moments, at least 10 times, restarting it each time. Database
// effects (written through Message.Tx) must be exactly once, no message lost; side
// effects outside the database may repeat, only for messages in flight at a kill.
func TestProcessKilled(t *testing.T) {
	t.Parallel()
	for _, dialect := range []string{"postgres", "mysql", "sqlite"} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			dsn, db := fresh(t, dialect)
			p := migratedWorker(t, db, am.Config{})
			n := scale(20_000)
			produce(t, db, p, n)
			side := filepath.Join(t.TempDir(), "side-effects.log")
			kills := 0
			for kills < 10 || remaining(db) > 0 {
				cmd := exec.Command(os.Args[0], "-test.run=^$")
				cmd.Env = append(os.Environ(), "AM_REL_CHILD=1", "AM_REL_DIALECT="+dialect, "AM_REL_DSN="+dsn, "AM_REL_SIDE="+side)
				cmd.Stderr = os.Stderr
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				if kills < 10 {
					time.Sleep(time.Duration(100+rand.IntN(400)) * time.Millisecond) // a random moment
					_ = cmd.Process.Signal(syscall.SIGKILL)
					_ = cmd.Wait()
					kills++
					continue
				}
				waitDrained(t, db, 3*time.Minute)
				_ = cmd.Process.Signal(syscall.SIGKILL)
				_ = cmd.Wait()
			}
			consumed, poisoned := account(t, db, n)
			runs, unique := sideEffects(t, side)
			t.Logf("%s: produced %d, consumed %d, poisoned %d, lost 0, kills %d, side effects %d for %d messages (%d repeated, from in-flight batches)",
				dialect, n, consumed, poisoned, kills, runs, unique, runs-unique)
			if unique != n {
				t.Fatalf("side effects seen for %d messages, want %d", unique, n)
			}
		})
	}
}

func remaining(db *gorm.DB) int64 {
	var n int64
	db.Model(&am.ConsumerMessage{}).Count(&n)
	return n
}

func sideEffects(t *testing.T, path string) (runs, unique int) {
	t.Helper()
	seen := map[int]int{}
	runs, _ = sideEffectsInto(t, path, seen)
	return runs, len(seen)
}

// sideEffectsInto counts the side-effect lines of one log into seen.
func sideEffectsInto(t *testing.T, path string, seen map[int]int) (runs int, err error) {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return 0, nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n, err := strconv.Atoi(sc.Text())
		if err != nil {
			continue // a line cut by SIGKILL
		}
		runs++
		seen[n]++
	}
	return runs, nil
}
