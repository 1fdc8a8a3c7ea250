// Package compat tests asyncmonolith beside the GORM plugins and set-ups people already
// run: gorm.io/plugin/dbresolver (a source and a lagging replica, registered before and
// after asyncmonolith), gorm.io/plugin/opentelemetry, gorm.io/plugin/prometheus,
// PrepareStmt, and a *gorm.DB opened on an existing *sql.DB. It is a module of its own so
// that the core module's go.mod gains none of their dependencies. It has no API: see its
// tests.
package compat
