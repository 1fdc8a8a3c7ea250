package dialect

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"gorm.io/gorm"
)

// ExactColumns are the identifier columns, by table, that must compare byte for byte: a
// case- or accent-insensitive comparison merges distinct insert ids (`Order:42` and
// `order:42`) and consumer types (`Audit` and `audit`), and a PAD SPACE one merges
// `order:42` and `order:42 `.
var ExactColumns = map[string][]string{
	"consumer_messages":  {"id", "consumer_type", "payload_type", "insert_id", "rail"},
	"poisoned_messages":  {"id", "consumer_type", "payload_type", "insert_id", "rail"},
	"scheduled_messages": {"id", "tag", "payload_type"},
}

// exactDefaults are the defaults of the ExactColumns that have one: MODIFY restates a
// column's whole definition, and would drop them. (A rail written as "SLOW" or "slow "
// by hand is not rail "slow", nor " " the default rail "".)
var exactDefaults = map[string]string{"rail": "''"}

// exactCollations are the NO PAD binary collations of utf8mb4, preferred first: MariaDB's
// (10.2+) and MySQL's (8.0.17+). utf8mb4_bin is not one of them: it is PAD SPACE on
// both, so 'a' = 'a ' under it (MariaDB 10.11: the second of them is a duplicate key).
var exactCollations = []string{"utf8mb4_nopad_bin", "utf8mb4_0900_bin"}

// EnsureExactNames gives the ExactColumns the server's NO PAD binary collation, with one
// ALTER TABLE per table whose columns do not have it yet. The column definitions are read
// back from the catalog, so only the collation changes. AutoMigrate never resets it: GORM
// compares types, sizes, nullability, defaults and comments, not collations.
func (mysqlDialect) EnsureExactNames(ctx context.Context, db *gorm.DB) error {
	db = db.WithContext(ctx)
	var have []string
	if err := db.Raw(`SELECT collation_name FROM information_schema.collations WHERE collation_name IN ?`, exactCollations).
		Scan(&have).Error; err != nil {
		return err
	}
	collation := ""
	for _, c := range exactCollations {
		if slices.ContainsFunc(have, func(h string) bool { return strings.EqualFold(h, c) }) {
			collation = c
			break
		}
	}
	if collation == "" {
		return fmt.Errorf("the server has no NO PAD binary collation (want one of %v: MariaDB 10.2+ or MySQL 8.0.17+)", exactCollations)
	}
	for _, table := range []string{"consumer_messages", "poisoned_messages", "scheduled_messages"} {
		var cols []struct { // columns named in tags, whatever the application's NamingStrategy
			Name      string  `gorm:"column:name"`
			Type      string  `gorm:"column:type"`
			Nullable  string  `gorm:"column:nullable"`
			Collation *string `gorm:"column:collation"`
		}
		err := db.Raw(`SELECT column_name AS name, column_type AS type, is_nullable AS nullable, collation_name AS collation
			FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ? AND column_name IN ?
			ORDER BY ordinal_position`, table, ExactColumns[table]).Scan(&cols).Error
		if err != nil {
			return err
		}
		var modify []string
		for _, c := range cols {
			if c.Collation != nil && strings.EqualFold(*c.Collation, collation) {
				continue
			}
			def := "MODIFY `" + c.Name + "` " + c.Type + " CHARACTER SET utf8mb4 COLLATE " + collation
			if c.Nullable == "NO" {
				def += " NOT NULL"
			}
			if d, ok := exactDefaults[c.Name]; ok {
				def += " DEFAULT " + d
			}
			modify = append(modify, def)
		}
		if len(modify) == 0 {
			continue
		}
		if err := db.Exec("ALTER TABLE `" + table + "` " + strings.Join(modify, ", ")).Error; err != nil {
			return fmt.Errorf("exact collation on %s: %w", table, err)
		}
	}
	return nil
}
