package asyncmonolith_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

// InsertIDs gives each payload of a batch its own insert id: the rows carry them, and a
// payload whose id is pending already is skipped while the rest of the batch is written.
func TestProduceBatchInsertIDs(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		registerBoth(t, e)
		batch := []OrderCancelled{{OrderID: "1"}, {OrderID: "2"}, {OrderID: "3"}}
		produce := func(b []OrderCancelled, ids ...string) error {
			return e.db.Transaction(func(tx *gorm.DB) error { return am.ProduceBatch(tx, b, am.InsertIDs(ids...)).Error })
		}
		if err := produce(batch, "in:1", "in:2", "in:3"); err != nil {
			t.Fatal(err)
		}
		if err := produce([]OrderCancelled{{OrderID: "2"}, {OrderID: "4"}}, "in:2", "in:4"); err != nil {
			t.Fatal(err)
		}
		var rows []am.ConsumerMessage
		if err := e.db.Order("insert_id, consumer_type").Find(&rows).Error; err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range rows {
			ids = append(ids, r.InsertID)
		}
		if want := []string{"in:1", "in:1", "in:2", "in:2", "in:3", "in:3", "in:4", "in:4"}; !slices.Equal(ids, want) {
			t.Fatalf("insert ids %v, want %v (one row per consumer; the pending in:2 skipped)", ids, want)
		}
		for _, bad := range [][]string{nil, {"in:5"}, {"in:5", "in:6", "in:7", "in:8"}} {
			if err := produce(batch, bad...); !errors.Is(err, am.ErrInvalidOption) {
				t.Fatalf("%d ids for 3 payloads: %v, want ErrInvalidOption", len(bad), err)
			}
		}
		if err := produce(batch, "a", "", "c"); !errors.Is(err, am.ErrInvalidName) {
			t.Fatalf("an empty insert id: %v, want ErrInvalidName", err)
		}
		err := e.db.Transaction(func(tx *gorm.DB) error {
			return am.ProduceBatch(tx, batch[:1], am.InsertIDs("x"), am.InsertID("y")).Error
		})
		if !errors.Is(err, am.ErrInvalidOption) {
			t.Fatalf("InsertIDs with InsertID: %v, want ErrInvalidOption", err)
		}
	})
}

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
