// Package postgres holds asyncmonolith's PostgreSQL migration files (package migrations
// embeds and applies them). NotifyUp is also what Plugin.Migrate runs to install the
// notification trigger, so the trigger's SQL has this one source.
package postgres

import _ "embed" // for NotifyUp

// NotifyUp is the up migration that installs the trigger announcing committed messages
// (LISTEN/NOTIFY): statements separated by ";" at the end of a line, with "--" comment
// lines.
//
//go:embed 0002_notify.up.sql
var NotifyUp string
