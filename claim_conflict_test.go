package asyncmonolith_test

import (
	"context"
	"errors"
	"strconv"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
)

// conflictingClaims makes the database refuse the next n claims with a deadlock (a trigger
// on the claim's UPDATE, counting with a sequence, which a rollback does not undo), as a
// claim racing another instance's on the same rows can be refused.
func conflictingClaims(t *testing.T, e *env, dialect string, n int) {
	t.Helper()
	var stmts []string
	switch dialect {
	case "postgres":
		stmts = []string{
			`CREATE SEQUENCE claim_conflicts`,
			`CREATE FUNCTION claim_conflict() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN IF nextval('claim_conflicts') <= ` + itoa(n) + ` THEN RAISE EXCEPTION 'deadlock (by the test)' USING ERRCODE = '40P01'; END IF; RETURN NEW; END $$`,
			`CREATE TRIGGER claim_conflict BEFORE UPDATE ON consumer_messages
FOR EACH ROW WHEN (NEW.pending IS NULL AND OLD.pending) EXECUTE FUNCTION claim_conflict()`,
		}
	case "mysql":
		stmts = []string{
			`CREATE SEQUENCE claim_conflicts`,
			`CREATE TRIGGER claim_conflict BEFORE UPDATE ON consumer_messages FOR EACH ROW
BEGIN IF NEW.pending IS NULL AND OLD.pending IS NOT NULL AND NEXTVAL(claim_conflicts) <= ` + itoa(n) + ` THEN
SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, MESSAGE_TEXT = 'deadlock (by the test)'; END IF; END`,
		}
	default:
		t.Fatalf("no conflicting claims on %s", dialect)
	}
	for _, s := range stmts {
		if err := e.db.Exec(s).Error; err != nil {
			t.Fatal(err)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// ProcessBatch claims again after a transient conflict, as a started processor does,
// instead of returning ErrRetryable to a caller that runs it beside other instances.
func TestProcessBatchClaimsAgainAfterAConflict(t *testing.T) {
	t.Parallel()
	for _, dialect := range []string{"postgres", "mysql"} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			e := setup(t, dialect, am.Config{})
			r := &recorder[Job]{}
			if err := am.Register[Job](e.p, am.ConsumerFunc[Job](r.Consume)); err != nil {
				t.Fatal(err)
			}
			if err := am.ProduceNow(context.Background(), e.db, Job{N: 1}); err != nil {
				t.Fatal(err)
			}
			conflictingClaims(t, e, dialect, 2)
			n, err := e.p.ProcessBatch(context.Background())
			if err != nil || n != 1 {
				t.Fatalf("ProcessBatch after 2 conflicts = %d, %v; want 1, nil", n, err)
			}
			if got := r.count(); got != 1 {
				t.Fatalf("the consumer ran %d times, want 1", got)
			}
			if c := e.p.Counters(); c.Conflicts != 2 || c.BatchErrors != 0 {
				t.Fatalf("counters %+v: want the 2 conflicts counted as conflicts", c)
			}
			// A conflict that lasts is returned, wrapping ErrRetryable, after a bounded number of claims.
			drop := []string{`DROP TRIGGER claim_conflict`, `DROP SEQUENCE claim_conflicts`}
			if dialect == "postgres" {
				drop = []string{`DROP TRIGGER claim_conflict ON consumer_messages`, `DROP FUNCTION claim_conflict()`, `DROP SEQUENCE claim_conflicts`}
			}
			for _, s := range drop {
				if err := e.db.Exec(s).Error; err != nil {
					t.Fatal(err)
				}
			}
			conflictingClaims(t, e, dialect, 1000)
			if err := am.ProduceNow(context.Background(), e.db, Job{N: 2}); err != nil {
				t.Fatal(err)
			}
			if n, err := e.p.ProcessBatch(context.Background()); !errors.Is(err, am.ErrRetryable) || n != 0 {
				t.Fatalf("ProcessBatch under a lasting conflict = %d, %v; want 0, ErrRetryable", n, err)
			}
			if c := e.p.Counters(); c.Conflicts != 2+6 || r.count() != 1 || e.pending(t) != 1 {
				t.Fatalf("counters %+v, %d runs, %d pending: want 6 more conflicts (a claim and 5 more), no run, the message pending", c, r.count(), e.pending(t))
			}
		})
	}
}
