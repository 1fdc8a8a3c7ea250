package asyncmonolith

import (
	"context"
	"fmt"

	"github.com/asyncmonolith/asyncmonolith/internal/dialect"
	"gorm.io/gorm"
)

// Migrate creates or updates the three tables and their indexes with GORM's AutoMigrate.
// The same schema, as SQL for each database, is in the migrations package.
//
// On PostgreSQL it also installs the trigger that notifies processors in other processes
// of new messages (migrations/postgres/0002_notify.up.sql); on MySQL/MariaDB it gives the
// id and name columns a NO PAD binary collation, so that they compare exactly
// (migrations/mysql/0003_exact_names.up.sql).
//
// Every statement runs in one transaction, so that a resolver plugin keeps them all on the
// source (source.go); MySQL/MariaDB still commit each DDL statement as it runs.
func (p *Plugin) Migrate(ctx context.Context, db *gorm.DB) error {
	d, err := dialect.For(db)
	if err != nil {
		return fmt.Errorf("asyncmonolith: migrate: %w", err)
	}
	// Instances starting at once each call Migrate: one runs at a time.
	if err := dialect.MigrateTx(ctx, db, d, func(tx *gorm.DB) error { return migrate(ctx, tx, d) }); err != nil {
		return fmt.Errorf("asyncmonolith: migrate: %w", err)
	}
	return nil
}

func migrate(ctx context.Context, db *gorm.DB, d dialect.Dialect) error {
	if err := db.WithContext(ctx).AutoMigrate(models()...); err != nil {
		return err
	}
	// Before leases, the unique index left out pending (migrations/*/0002_leases or 0003):
	// it would make a running message block its insert id.
	// Before rails, the fetch index had no rail column (migrations/*/0004_rails or 0003):
	// idx_consumer_messages_rail_fetch replaces it.
	for _, legacy := range []string{legacyInsertIDIndex, legacyFetchIndex} {
		if m := db.WithContext(ctx).Migrator(); m.HasIndex(&ConsumerMessage{}, legacy) {
			if err := m.DropIndex(&ConsumerMessage{}, legacy); err != nil {
				return fmt.Errorf("drop %s: %w", legacy, err)
			}
		}
	}
	if err := d.EnsureExactNames(ctx, db); err != nil {
		return err
	}
	if err := d.EnsureNotify(ctx, db); err != nil {
		return fmt.Errorf("notify trigger: %w", err)
	}
	return nil
}

// legacyInsertIDIndex is the unique index on (insert_id, consumer_type) of schemas created
// before leases.
const legacyInsertIDIndex = "ux_consumer_messages_insert_id_consumer_type"

// legacyFetchIndex is the fetch index of schemas created before rails.
const legacyFetchIndex = "idx_consumer_messages_fetch"
