package asyncmonolith_test

import (
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"gorm.io/gorm"
)

// LateHookedOrder produces from its after-hooks.
type LateHookedOrder struct {
	ID     string `gorm:"primaryKey;size:64"`
	Status string
}

func (o *LateHookedOrder) AfterCreate(tx *gorm.DB) error {
	return am.Produce(tx, OrderCancelled{OrderID: "created " + o.ID}).Error
}

func (o *LateHookedOrder) AfterDelete(tx *gorm.DB) error {
	return am.Produce(tx, OrderCancelled{OrderID: "deleted " + o.ID}).Error
}

// EarlyHookedOrder produces from its before-hooks.
type EarlyHookedOrder struct {
	ID     string `gorm:"primaryKey;size:64"`
	Status string
}

func (o *EarlyHookedOrder) BeforeCreate(tx *gorm.DB) error {
	return am.Produce(tx, OrderCancelled{OrderID: "creating " + o.ID}).Error
}

func (o *EarlyHookedOrder) BeforeUpdate(tx *gorm.DB) error {
	return am.Produce(tx, OrderCancelled{OrderID: "updating " + o.ID}).Error
}

// TestProduceInAModelHook: a hook calling Produce(tx, …) commits its messages with the
// write, with or without SkipDefaultTransaction (on the session or globally), and a
// message that cannot be written rolls the write back.
func TestProduceInAModelHook(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		for _, mode := range []string{"default", "session skip", "global skip"} {
			cfg := &gorm.Config{SkipDefaultTransaction: mode == "global skip"}
			e := setup(t, dialect, am.Config{}, testdb.Options{Config: cfg})
			registerBoth(t, e)
			if err := e.db.AutoMigrate(&LateHookedOrder{}, &EarlyHookedOrder{}); err != nil {
				t.Fatal(err)
			}
			db := e.db
			if mode == "session skip" {
				db = db.Session(&gorm.Session{SkipDefaultTransaction: true})
			}
			want := int64(0)
			steps := []struct {
				name  string
				write func() error
			}{
				{"AfterCreate", func() error { return db.Create(&LateHookedOrder{ID: "1"}).Error }},
				{"AfterDelete", func() error { return db.Delete(&LateHookedOrder{ID: "1"}).Error }},
				{"BeforeCreate", func() error { return db.Create(&EarlyHookedOrder{ID: "2"}).Error }},
				{"BeforeUpdate", func() error { return db.Model(&EarlyHookedOrder{ID: "2"}).Update("status", "paid").Error }},
			}
			for _, step := range steps {
				if err := step.write(); err != nil {
					t.Fatalf("%s, %s: %v", mode, step.name, err)
				}
				want += 2
				if got := e.pending(t); got != want {
					t.Fatalf("%s, %s: %d messages, want %d", mode, step.name, got, want)
				}
			}
			// A hook whose message cannot be written fails the write, which is rolled back.
			if err := e.db.Migrator().RenameTable("consumer_messages", "consumer_messages_away"); err != nil {
				t.Fatal(err)
			}
			errLate := db.Create(&LateHookedOrder{ID: "f"}).Error
			errEarly := db.Create(&EarlyHookedOrder{ID: "f"}).Error
			if err := e.db.Migrator().RenameTable("consumer_messages_away", "consumer_messages"); err != nil {
				t.Fatal(err)
			}
			for name, err := range map[string]error{"AfterCreate": errLate, "BeforeCreate": errEarly} {
				if err == nil {
					t.Fatalf("%s, %s: the write succeeded although its message was not written", mode, name)
				}
			}
			late, early := e.count(t, &LateHookedOrder{}, "id = ?", "f"), e.count(t, &EarlyHookedOrder{}, "id = ?", "f")
			if late+early != 0 {
				t.Fatalf("%s: orders committed without their messages (after-hook %d, before-hook %d)", mode, late, early)
			}
		}
	})
}
