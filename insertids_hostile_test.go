package asyncmonolith_test

import (
	"errors"
	"strings"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

// Hostile insert ids in one batch: a duplicate inside the batch is written once per
// consumer (the second is deduplicated like a pending one), and ids no database can store
// alike (over-long, NUL, invalid UTF-8) fail with ErrInvalidName on every database,
// before any row is written.
func TestProduceBatchInsertIDsHostile(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		registerBoth(t, e)
		produce := func(b []OrderCancelled, ids ...string) error {
			return e.db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, b, am.InsertIDs(ids...)).Error })
		}
		batch := []OrderCancelled{{OrderID: "1"}, {OrderID: "2"}, {OrderID: "3"}}
		if err := produce(batch, "dup", "other", "dup"); err != nil {
			t.Fatalf("a duplicate id inside one batch: %v", err)
		}
		var n int64
		if err := e.db.Model(&am.ConsumerMessage{}).Where("insert_id = ?", "dup").Count(&n).Error; err != nil {
			t.Fatal(err)
		}
		if n != 2 {
			t.Fatalf("%d rows with the duplicated id, want 2 (one per consumer)", n)
		}
		for name, bad := range map[string]string{
			"over-long":     strings.Repeat("x", am.NameMaxLen+1),
			"NUL":           "a\x00b",
			"invalid UTF-8": "a\xffb",
		} {
			if err := produce(batch, "ok-1", bad, "ok-3"); !errors.Is(err, am.ErrInvalidName) {
				t.Errorf("%s insert id: %v, want ErrInvalidName", name, err)
			}
		}
		if err := e.db.Model(&am.ConsumerMessage{}).Where("insert_id LIKE ?", "ok-%").Count(&n).Error; err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("%d rows of the refused batches written", n)
		}
	})
}
