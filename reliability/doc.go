// Package reliability holds tests that do to asyncmonolith what production does to it:
// processes killed mid-batch, database connections cut, hand-written rows, hostile input.
// Each fault test counts every message: each must end consumed (at least once) or
// poisoned, none missing. Run with `go test ./reliability`; AM_RELIABILITY_SCALE scales the
// message counts (default 1).
package reliability
