package reliability_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

// TestManyInstances runs 4 OS processes with 2 processors each on one database while the
// test keeps producing 50,000 messages: with no faults, every message is consumed exactly
// once — in the database and in the side effects outside it.
func TestManyInstances(t *testing.T) {
	t.Parallel()
	for _, dialect := range []string{"postgres", "mysql"} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			dsn, db := fresh(t, dialect)
			migratedWorker(t, db, am.Config{}) // the producer side: plugin and tables
			dir := t.TempDir()
			var children []*exec.Cmd
			for i := range 4 {
				cmd := exec.Command(os.Args[0], "-test.run=^$")
				cmd.Env = append(os.Environ(), "AM_REL_CHILD=1", "AM_REL_DIALECT="+dialect, "AM_REL_DSN="+dsn,
					"AM_REL_SIDE="+filepath.Join(dir, "side-"+string(rune('a'+i))+".log"))
				cmd.Stderr = os.Stderr
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				children = append(children, cmd)
			}
			defer func() {
				for _, c := range children {
					_ = c.Process.Signal(syscall.SIGKILL)
					_ = c.Wait()
				}
			}()
			n := scale(50_000)
			// Producers keep adding while the instances consume: 100 per transaction.
			batch := make([]Work, 0, 100)
			for i := 0; i < n; i++ {
				batch = append(batch, Work{N: i})
				if len(batch) == cap(batch) || i == n-1 {
					if err := db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, batch).Error }); err != nil {
						t.Fatal(err)
					}
					batch = batch[:0]
				}
			}
			waitDrained(t, db, 5*time.Minute)
			consumed, poisoned := account(t, db, n)
			runs, unique := 0, 0
			seen := map[int]int{}
			for i := range 4 {
				r, _ := sideEffectsInto(t, filepath.Join(dir, "side-"+string(rune('a'+i))+".log"), seen)
				runs += r
			}
			unique = len(seen)
			t.Logf("%s: 4 processes × 2 processors: produced %d, consumed %d, poisoned %d, lost 0, side effects %d for %d messages", dialect, n, consumed, poisoned, runs, unique)
			if runs != n || unique != n {
				t.Fatalf("side effects: %d runs for %d messages, want exactly %d each once", runs, unique, n)
			}
		})
	}
}
