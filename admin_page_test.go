package asyncmonolith_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// pageAll walks every page of a listing and returns the ids in order.
func pageAll[T any](t *testing.T, id func(T) string, page func(cursor string) (am.Page[T], error)) []string {
	t.Helper()
	var ids []string
	cursor := ""
	for i := 0; ; i++ {
		p, err := page(cursor)
		if err != nil {
			t.Fatalf("page %d: %v", i, err)
		}
		for _, r := range p.Rows {
			ids = append(ids, id(r))
		}
		if p.Next == "" {
			return ids
		}
		if i > 100 {
			t.Fatal("paging does not end")
		}
		cursor = p.Next
	}
}

func TestPageMessagesKeyset(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		registerBoth(t, e)
		ctx := context.Background()
		for i := range 7 {
			opts := []am.ProduceOption{am.InsertID(fmt.Sprintf("order.%d", i))}
			if i%3 == 0 {
				opts = append(opts, am.Delay(time.Hour))
			}
			if err := am.ProduceNow(ctx, e.db, OrderCancelled{OrderID: fmt.Sprint(i)}, opts...); err != nil {
				t.Fatal(err)
			}
			e.clock.Advance(time.Millisecond) // some rows share created_at, others not
		}
		all, err := e.p.ListMessages(ctx, am.MessageFilter{Limit: 1000})
		if err != nil || len(all) != 14 {
			t.Fatalf("list = %d, %v", len(all), err)
		}
		want := make([]string, len(all))
		for i, m := range all {
			want[i] = m.ID
		}
		msgID := func(m am.ConsumerMessage) string { return m.ID }
		got := pageAll(t, msgID, func(c string) (am.Page[am.ConsumerMessage], error) {
			return e.p.PageMessages(ctx, am.MessageFilter{Limit: 3}, c)
		})
		if !slices.Equal(got, want) {
			t.Fatalf("pages = %v\nwant    %v", got, want)
		}
		// A last page that is exactly full has no Next.
		if p, err := e.p.PageMessages(ctx, am.MessageFilter{Limit: 14}, ""); err != nil || len(p.Rows) != 14 || p.Next != "" {
			t.Fatalf("full last page: %d rows, next %q, %v", len(p.Rows), p.Next, err)
		}
		due := false
		delayed := pageAll(t, msgID, func(c string) (am.Page[am.ConsumerMessage], error) {
			return e.p.PageMessages(ctx, am.MessageFilter{Limit: 2, ConsumerType: "Refunder", Due: &due}, c)
		})
		if len(delayed) != 3 { // orders 0, 3, 6
			t.Fatalf("delayed Refunder rows = %d, want 3", len(delayed))
		}
		one, err := e.p.PageMessages(ctx, am.MessageFilter{InsertID: "order.4"}, "")
		if err != nil || len(one.Rows) != 2 || one.Rows[0].InsertID != "order.4" {
			t.Fatalf("insert id filter: %+v, %v", one.Rows, err)
		}
		if n, err := e.p.CountMessages(ctx, am.MessageFilter{ConsumerType: "EmailSender", Due: &due}); err != nil || n != 3 {
			t.Fatalf("count = %d, %v", n, err)
		}
		if _, err := e.p.PageMessages(ctx, am.MessageFilter{}, "not-a-cursor"); !errors.Is(err, am.ErrInvalidOption) {
			t.Fatalf("bad cursor: %v", err)
		}
		if _, err := e.p.PageMessages(ctx, am.MessageFilter{}, "1.x.id"); !errors.Is(err, am.ErrInvalidOption) {
			t.Fatalf("bad cursor number: %v", err)
		}
		m, err := e.p.GetMessage(ctx, want[0])
		if err != nil || m.ID != want[0] {
			t.Fatalf("get = %+v, %v", m, err)
		}
		if _, err := e.p.GetMessage(ctx, "missing"); !errors.Is(err, am.ErrMessageNotFound) {
			t.Fatalf("get missing: %v", err)
		}
	})
}

func TestPagePoisonedAndSchedules(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e, _ := poisonSetup(t, dialect)
		reportConsumers(t, e.p)
		ctx := context.Background()
		for i := range 5 {
			if err := am.ProduceNow(ctx, e.db, Job{N: i}, am.InsertID(fmt.Sprintf("job-%d", i%2))); err != nil {
				t.Fatal(err)
			}
			mustBatch(t, e)
			if i != 2 {
				e.clock.Advance(time.Second) // jobs 2 and 3 are poisoned in the same millisecond
			}
		}
		list, err := e.p.ListPoisoned(ctx, am.MessageFilter{})
		if err != nil || len(list) != 5 {
			t.Fatalf("poisoned = %d, %v", len(list), err)
		}
		poisonedID := func(m am.PoisonedMessage) string { return m.ID }
		got := pageAll(t, poisonedID, func(c string) (am.Page[am.PoisonedMessage], error) {
			return e.p.PagePoisoned(ctx, am.MessageFilter{Limit: 2}, c)
		})
		if len(got) != 5 || len(uniqIDs(got)) != 5 {
			t.Fatalf("poisoned pages = %v", got)
		}
		rows, _ := e.p.PagePoisoned(ctx, am.MessageFilter{Limit: 10}, "")
		for i := 1; i < len(rows.Rows); i++ {
			if rows.Rows[i].PoisonedAt > rows.Rows[i-1].PoisonedAt {
				t.Fatalf("not most recent first: %+v", rows.Rows)
			}
		}
		odd := pageAll(t, poisonedID, func(c string) (am.Page[am.PoisonedMessage], error) {
			return e.p.PagePoisoned(ctx, am.MessageFilter{Limit: 1, InsertID: "job-1"}, c)
		})
		if len(odd) != 2 {
			t.Fatalf("insert id job-1: %d poisoned, want 2", len(odd))
		}
		if n, err := e.p.CountPoisoned(ctx, am.MessageFilter{OlderThan: 2500 * time.Millisecond}); err != nil || n != 2 {
			t.Fatalf("count older than 2.5s = %d, %v, want 2", n, err)
		}

		for _, expr := range []string{"@hourly", "@daily", "@weekly"} {
			if _, err := am.Schedule(t.Context(), e.db, WeeklyReport{}, expr, am.Tag("t")); err != nil {
				t.Fatal(err)
			}
		}
		var next []string
		sched := pageAll(t, func(s am.ScheduleInfo) string { next = append(next, s.ChronExpression); return s.ID },
			func(c string) (am.Page[am.ScheduleInfo], error) {
				return e.p.PageSchedules(ctx, am.ScheduleFilter{Tag: "t", Limit: 2}, c)
			})
		if len(sched) != 3 || !slices.Equal(next, []string{"@hourly", "@daily", "@weekly"}) {
			t.Fatalf("schedule pages = %v", next)
		}
	})
}

func uniqIDs(ids []string) map[string]bool {
	m := map[string]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// Keyset paging over rows that share their sort keys, with rows inserted and deleted
// between pages: no row is repeated or seen out of order, a row inserted ahead of the cursor
// is seen, one inserted behind it or deleted before its page is not, and every other row is
// seen once.
func TestPagingStableUnderChangesWithEqualKeys(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		e := setup(t, dialect, am.Config{})
		ctx := context.Background()
		type table struct {
			name     string
			put, del func(id string) error
			page     func(cursor string) ([]string, string, error)
			desc     bool // poisoned rows come most recent first, then id descending
		}
		tables := []table{{
			name: "messages",
			put: func(id string) error {
				return e.db.Create(&am.ConsumerMessage{ID: id, CreatedAt: 5000, AvailableAfter: 7000, ConsumerType: "C",
					PayloadType: "P", Payload: "{}", InsertID: id}).Error
			},
			del: func(id string) error { return e.db.Delete(&am.ConsumerMessage{}, "id = ?", id).Error },
			page: func(cursor string) ([]string, string, error) {
				pg, err := e.p.PageMessages(ctx, am.MessageFilter{Limit: 3}, cursor)
				return idsOf(pg.Rows, func(m am.ConsumerMessage) string { return m.ID }), pg.Next, err
			},
		}, {
			name: "poisoned", desc: true,
			put: func(id string) error {
				return e.db.Create(&am.PoisonedMessage{ID: id, CreatedAt: 5000, AvailableAfter: 7000, ConsumerType: "C",
					PayloadType: "P", Payload: "{}", InsertID: id, LastError: "x", PoisonedAt: 9000}).Error
			},
			del: func(id string) error { return e.db.Delete(&am.PoisonedMessage{}, "id = ?", id).Error },
			page: func(cursor string) ([]string, string, error) {
				pg, err := e.p.PagePoisoned(ctx, am.MessageFilter{Limit: 3}, cursor)
				return idsOf(pg.Rows, func(m am.PoisonedMessage) string { return m.ID }), pg.Next, err
			},
		}}
		for _, tb := range tables {
			var unseen []string // the original rows not seen yet, in page order
			for i := range 20 {
				id := fmt.Sprintf("r%02d", i)
				if err := tb.put(id); err != nil {
					t.Fatal(err)
				}
				unseen = append(unseen, id)
			}
			if tb.desc {
				slices.Reverse(unseen)
			}
			// Ids sorting before every "r…" id and after every one.
			ahead, behind := "s", "a"
			if tb.desc {
				ahead, behind = "a", "s"
			}
			want := map[string]bool{}
			for _, id := range unseen {
				want[id] = true
			}
			var seen []string
			cursor := ""
			for step := 0; ; step++ {
				ids, next, err := tb.page(cursor)
				if err != nil {
					t.Fatalf("%s: page %d: %v", tb.name, step, err)
				}
				seen = append(seen, ids...)
				for _, id := range ids {
					unseen = slices.DeleteFunc(unseen, func(u string) bool { return u == id })
				}
				if next == "" || step > 40 {
					break
				}
				last := seen[len(seen)-1]
				changes := []error{tb.del(seen[0]), tb.put(ahead + last), tb.put(behind + last)}
				want[ahead+last] = true
				if len(unseen) > 1 { // delete the last original row still ahead
					gone := unseen[len(unseen)-1]
					unseen = unseen[:len(unseen)-1]
					delete(want, gone)
					changes = append(changes, tb.del(gone))
				}
				if err := errors.Join(changes...); err != nil {
					t.Fatal(err)
				}
				cursor = next
			}
			sorted := slices.Clone(seen)
			slices.Sort(sorted)
			if tb.desc {
				slices.Reverse(sorted)
			}
			got := uniqIDs(seen)
			if len(got) != len(seen) || !slices.Equal(sorted, seen) || !maps.Equal(got, want) {
				t.Fatalf("%s: walked %q\nwant the rows %v, each once, in order", tb.name, seen, slices.Sorted(maps.Keys(want)))
			}
		}
	})
}

func idsOf[T any](rows []T, id func(T) string) []string {
	var ids []string
	for _, r := range rows {
		ids = append(ids, id(r))
	}
	return ids
}

// On MySQL/MariaDB a page from the middle reads about a page of index entries, not every
// entry before it (which a row comparison "(a, b) > (?, ?)" made them do). Counted with the
// session's handler counters, on one connection.
func TestPageFromTheMiddleReadsARangeOnMySQL(t *testing.T) {
	t.Parallel()
	e := setup(t, "mysql", am.Config{})
	ctx := context.Background()
	sqlDB, err := e.db.DB()
	if err != nil {
		t.Fatal(err)
	}
	sqlDB.SetMaxOpenConns(1) // FLUSH STATUS, the page and SHOW STATUS share a session
	const n = 20_000
	rows := make([]am.ConsumerMessage, n)
	poisoned := make([]am.PoisonedMessage, n)
	for i := range rows {
		id := fmt.Sprintf("m%06d", i)
		rows[i] = am.ConsumerMessage{ID: id, CreatedAt: int64(i / 10), AvailableAfter: int64(i / 100), ConsumerType: "C",
			PayloadType: "P", Payload: "{}", InsertID: id}
		poisoned[i] = am.PoisonedMessage{ID: id, CreatedAt: 1, AvailableAfter: 1, ConsumerType: "C", PayloadType: "P",
			Payload: "{}", InsertID: id, LastError: "x", PoisonedAt: int64(i / 100)}
	}
	if err := errors.Join(e.db.CreateInBatches(rows, 2000).Error, e.db.CreateInBatches(poisoned, 2000).Error); err != nil {
		t.Fatal(err)
	}
	reads := func(page func() (int, error)) int64 {
		t.Helper()
		if err := e.db.Exec("FLUSH STATUS").Error; err != nil {
			t.Fatal(err)
		}
		if got, err := page(); err != nil || got != 50 {
			t.Fatalf("page of %d rows, %v", got, err)
		}
		var total int64
		if err := e.db.Raw("SELECT CAST(SUM(VARIABLE_VALUE) AS SIGNED) FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME IN " +
			"('HANDLER_READ_NEXT', 'HANDLER_READ_PREV', 'HANDLER_READ_RND_NEXT')").Scan(&total).Error; err != nil {
			t.Fatal(err)
		}
		return total
	}
	mid, err := e.p.PageMessages(ctx, am.MessageFilter{Limit: n / 2}, "")
	if err != nil || mid.Next == "" {
		t.Fatalf("half: next %q, %v", mid.Next, err)
	}
	midP, err := e.p.PagePoisoned(ctx, am.MessageFilter{Limit: n / 2}, "")
	if err != nil || midP.Next == "" {
		t.Fatalf("half of poisoned: next %q, %v", midP.Next, err)
	}
	for name, page := range map[string]func() (int, error){
		"messages": func() (int, error) {
			pg, err := e.p.PageMessages(ctx, am.MessageFilter{Limit: 50}, mid.Next)
			return len(pg.Rows), err
		},
		"poisoned": func() (int, error) {
			pg, err := e.p.PagePoisoned(ctx, am.MessageFilter{Limit: 50}, midP.Next)
			return len(pg.Rows), err
		},
	} {
		got := reads(page)
		t.Logf("%s: a page after row %d read %d index entries", name, n/2, got)
		if got > 1000 {
			t.Errorf("%s: a page after row %d read %d index entries, want about 50", name, n/2, got)
		}
	}
}
