package asyncmonolith_test

import (
	"context"
	"encoding/base64"
	"errors"
	"regexp"
	"slices"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// A cursor is plain URL-safe ASCII whatever the id of the row it ends on (hand-written ids
// with dots, slashes, percent signs, and where the database stores them NUL bytes or
// invalid UTF-8), and paging goes past such rows; a forged cursor is ErrInvalidOption, on
// PostgreSQL also one whose id no text column can hold (rather than PostgreSQL's error).
func TestPageCursorsCarryAnyID(t *testing.T) {
	t.Parallel()
	safe := regexp.MustCompile(`^-?[0-9]+\.-?[0-9]+\.[A-Za-z0-9_-]+$`)
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		ctx := context.Background()
		ids := []string{"a.b.c", "a/../b", "100%", "x y?z#w", "é"}
		switch dialect {
		case "sqlite":
			ids = append(ids, "nul\x00id", "bad\xffutf8")
		case "mysql":
			ids = append(ids, "nul\x00id")
		}
		for _, id := range ids {
			if err := e.db.Create(&am.ConsumerMessage{ID: id, CreatedAt: 1000, AvailableAfter: 1000, ConsumerType: "C",
				PayloadType: "P", Payload: "{}", InsertID: id}).Error; err != nil {
				t.Fatal(err)
			}
		}
		var cursors []string
		got := pageAll(t, func(m am.ConsumerMessage) string { return m.ID }, func(c string) (am.Page[am.ConsumerMessage], error) {
			pg, err := e.p.PageMessages(ctx, am.MessageFilter{Limit: 1}, c)
			if pg.Next != "" {
				cursors = append(cursors, pg.Next)
			}
			return pg, err
		})
		want := slices.Clone(ids)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("pages = %q\nwant    %q", got, want)
		}
		for _, c := range cursors {
			if !safe.MatchString(c) {
				t.Fatalf("cursor %q is not plain URL-safe ASCII", c)
			}
		}
		for _, c := range []string{"1.2.!!", "1.2.a.b", "1.2.", "..", "1.2.3.4"} {
			if _, err := e.p.PageMessages(ctx, am.MessageFilter{}, c); !errors.Is(err, am.ErrInvalidOption) {
				t.Fatalf("cursor %q: %v, want ErrInvalidOption", c, err)
			}
		}
		for _, id := range []string{"\x00", "\xff"} {
			c := "1.2." + base64.RawURLEncoding.EncodeToString([]byte(id))
			_, err1 := e.p.PageMessages(ctx, am.MessageFilter{}, c)
			_, err2 := e.p.PagePoisoned(ctx, am.MessageFilter{}, c)
			_, err3 := e.p.PageSchedules(ctx, am.ScheduleFilter{Limit: 10}, c)
			for _, err := range []error{err1, err2, err3} {
				if refused := !caps(dialect).TextStorable(id); refused && !errors.Is(err, am.ErrInvalidOption) || !refused && err != nil {
					t.Fatalf("%s: cursor ending on id %q: %v", dialect, id, err)
				}
			}
		}
	})
}

// Values PostgreSQL text cannot hold (NUL bytes, invalid UTF-8), passed to the operations
// API by a script or a web form: on PostgreSQL a filter is ErrInvalidOption and an id is
// simply not there (ErrMessageNotFound, or not counted), never PostgreSQL's own error; the
// other databases compare them like any other value.
func TestAdminAPIWithBytesPostgreSQLCannotHold(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		ctx := context.Background()
		if err := e.db.Create(&am.PoisonedMessage{ID: "p1", CreatedAt: 1, AvailableAfter: 1, ConsumerType: "C", PayloadType: "P",
			Payload: "{}", InsertID: "p1", LastError: "x", PoisonedAt: 1}).Error; err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"a\x00b", "\xff"} {
			pg := !caps(dialect).TextStorable(bad) // refused as an invalid option (PostgreSQL)
			f := am.MessageFilter{ConsumerType: bad}
			_, err1 := e.p.PageMessages(ctx, f, "")
			_, err2 := e.p.ListMessages(ctx, am.MessageFilter{InsertID: bad})
			_, err3 := e.p.CountPoisoned(ctx, am.MessageFilter{PayloadType: bad})
			_, err4 := e.p.PurgePoisoned(ctx, am.MessageFilter{ConsumerType: bad, OlderThan: time.Hour})
			_, err5 := e.p.PageSchedules(ctx, am.ScheduleFilter{Tag: bad, Limit: 10}, "")
			for i, err := range []error{err1, err2, err3, err4, err5} {
				if pg && !errors.Is(err, am.ErrInvalidOption) || !pg && err != nil {
					t.Fatalf("%q, call %d: %v", bad, i+1, err)
				}
			}
			if _, err := e.p.GetMessage(ctx, bad); !errors.Is(err, am.ErrMessageNotFound) {
				t.Fatalf("GetMessage(%q): %v", bad, err)
			}
			if _, err := e.p.GetPoisoned(ctx, bad); !errors.Is(err, am.ErrMessageNotFound) {
				t.Fatalf("GetPoisoned(%q): %v", bad, err)
			}
			if n, err := e.p.RequeuePoisoned(ctx, []string{"p1", bad}); n != 0 || !errors.Is(err, am.ErrMessageNotFound) {
				t.Fatalf("RequeuePoisoned(p1, %q) = %d, %v", bad, n, err)
			}
		}
		if n, err := e.p.DeletePoisoned(ctx, []string{"\xff", "p1", "a\x00"}); n != 1 || err != nil {
			t.Fatalf("DeletePoisoned = %d, %v, want 1", n, err)
		}
	})
}
