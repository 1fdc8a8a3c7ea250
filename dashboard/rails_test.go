package dashboard_test

import (
	"context"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/dashboard"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
)

// Report is the payload of the rails fixture's consumer on the "reports" rail.
type Report struct {
	N int `json:"n"`
}

// newRailsFixture serves the dashboard of a plugin with rails "reports" and "idle": Job
// (Failing, default rail) has 2 poisoned and 1 delayed; Report ("reports" rail, failing)
// has 1 poisoned, 2 due and 1 running; a hand-written row sits on "ghost", which no rail runs.
func newRailsFixture(t *testing.T, dialect string) *fixture {
	t.Helper()
	ctx := context.Background()
	db := testdb.Open(t, dialect)
	p := am.New(am.Config{MaxAttempts: 1, Rails: map[string]am.RailConfig{"reports": {}, "idle": {}}})
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	if err := p.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := am.Register[Job](p, Failing{}); err != nil {
		t.Fatal(err)
	}
	if err := am.Register[Report](p, am.ConsumerFunc[Report](func(context.Context, *am.Message[Report]) error {
		return context.DeadlineExceeded
	}), am.WithName("Render"), am.WithRail("reports")); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := am.ProduceNow(ctx, db, Job{N: i}); err != nil {
			t.Fatal(err)
		}
	}
	if err := am.ProduceNow(ctx, db, Report{N: 0}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.ProcessBatch(ctx); err != nil { // poisons the three
		t.Fatal(err)
	}
	if err := am.ProduceNow(ctx, db, Job{N: 9}, am.Delay(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if err := am.ProduceNow(ctx, db, Report{N: i}, am.At(time.Now().Add(-time.Duration(i)*time.Minute))); err != nil {
			t.Fatal(err)
		}
	}
	// The oldest report is "running": claimed, its lease ahead.
	if err := db.Model(&am.ConsumerMessage{}).Where("consumer_type = ? AND payload LIKE ?", "Render", `%"n":3%`).
		Updates(map[string]any{"pending": nil, "available_after": time.Now().Add(time.Hour).UnixMilli()}).Error; err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	if err := db.Create(&am.ConsumerMessage{ID: "ghost-1", CreatedAt: now, AvailableAfter: now - 5000, ConsumerType: "Gone",
		PayloadType: "Job", Payload: "{}", InsertID: "ghost-1", Rail: "ghost"}).Error; err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/am/", dashboard.New(p, dashboard.BasePath("/am")))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	jar, _ := cookiejar.New(nil)
	return &fixture{db: db, p: p, srv: srv, c: &http.Client{Jar: jar}}
}

var (
	railRow  = regexp.MustCompile(`(?s)<tr data-rail="([^"]*)">(.*?)</tr>`)
	railCell = regexp.MustCompile(`data-k="(\w+)">(?:<[^>]*>)?([^<]*)`)
	rowIDs   = regexp.MustCompile(`<td class="id"><a href="[^"]*">([^<]*)</a></td><td>([^<]*)</td><td>([^<]*)</td>`)
)

// TestDashboardRails: the overview's rail table shows every configured rail (an empty one
// too) and a rail found only on stored rows, with the database's counts; the consumer
// table, the lists and the detail pages show each message's rail; the rail filter keeps
// one rail's messages, in the lists and in a purge.
func TestDashboardRails(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		f := newRailsFixture(t, dialect)
		_, body := f.get(t, "/am/overview/live")
		got := map[string]map[string]string{}
		var order []string
		for _, m := range railRow.FindAllStringSubmatch(body, -1) {
			cells := map[string]string{}
			for _, c := range railCell.FindAllStringSubmatch(m[2], -1) {
				cells[c[1]] = c[2]
			}
			got[m[1]] = cells
			order = append(order, m[1])
		}
		want := map[string]map[string]string{
			"(default)": {"configured": "yes", "pending": "1", "running": "0", "due": "0", "oldest": "–", "poisoned": "2"},
			"idle":      {"configured": "yes", "pending": "0", "running": "0", "due": "0", "oldest": "–", "poisoned": "0"},
			"reports":   {"configured": "yes", "pending": "3", "running": "1", "due": "2", "oldest": "2m0s", "poisoned": "1"},
			"ghost":     {"configured": "not configured", "pending": "1", "running": "0", "due": "1", "oldest": "5s", "poisoned": "0"},
		}
		if strings.Join(order, ",") != "(default),idle,reports,ghost" {
			t.Fatalf("rail rows %v, want the default, the configured by name, then ghost:\n%s", order, body)
		}
		for rail, w := range want {
			for k, v := range w {
				if k == "oldest" && v != "–" {
					// Ages from the wall clock: at least the row's, a little more on a slow machine.
					wd, _ := time.ParseDuration(v)
					gd, err := time.ParseDuration(got[rail][k])
					if err != nil || gd < wd || gd > wd+5*time.Second {
						t.Fatalf("rail %s oldest = %q, want %s to %s\n%s", rail, got[rail][k], wd, wd+5*time.Second, body)
					}
					continue
				}
				if got[rail][k] != v {
					t.Fatalf("rail %s %s = %q, want %q (row %v)\n%s", rail, k, got[rail][k], v, got[rail], body)
				}
			}
		}
		if !strings.Contains(body, `<a href="/am/messages?consumer=Render&amp;rail=reports">Render</a></th>
<td data-k="rail">reports</td>`) {
			t.Fatalf("the consumer table does not show Render on rail reports:\n%s", body)
		}

		list := func(path string) [][3]string {
			t.Helper()
			status, body := f.get(t, path)
			if status != http.StatusOK {
				t.Fatalf("GET %s = %d\n%s", path, status, body)
			}
			var out [][3]string
			for _, m := range rowIDs.FindAllStringSubmatch(body, -1) {
				out = append(out, [3]string{m[1], m[2], m[3]})
			}
			return out
		}
		for path, wantRows := range map[string]struct {
			n              int
			consumer, rail string
		}{
			"/am/messages?rail=reports":               {3, "Render", "reports"},
			"/am/messages?rail=%28default%29":         {1, "Failing", "(default)"},
			"/am/messages?rail=ghost":                 {1, "Gone", "ghost"},
			"/am/messages?rail=idle":                  {0, "", ""},
			"/am/poisoned?rail=reports":               {1, "Render", "reports"},
			"/am/poisoned?rail=%28default%29":         {2, "Failing", "(default)"},
			"/am/messages?rail=reports&limit=2":       {2, "Render", "reports"},
			"/am/messages?consumer=Render&rail=ghost": {0, "", ""},
		} {
			rows := list(path)
			if len(rows) != wantRows.n {
				t.Fatalf("%s: %d rows %v, want %d", path, len(rows), rows, wantRows.n)
			}
			for _, r := range rows {
				if r[1] != wantRows.consumer || r[2] != wantRows.rail {
					t.Fatalf("%s: row %v, want consumer %s on rail %s", path, r, wantRows.consumer, wantRows.rail)
				}
			}
		}
		if all := list("/am/messages"); len(all) != 5 {
			t.Fatalf("messages without a rail filter: %v", all)
		}
		// The second page of a rail keeps the rail filter in its link and shows the rest.
		_, body = f.get(t, "/am/messages?rail=reports&limit=2")
		next := regexp.MustCompile(`rel="next" href="([^"]*)"`).FindStringSubmatch(body)
		if next == nil || !strings.Contains(next[1], "rail=reports") {
			t.Fatalf("no next link keeping the rail:\n%s", body)
		}
		if rest := list(strings.ReplaceAll(next[1], "&amp;", "&")); len(rest) != 1 || rest[0][2] != "reports" {
			t.Fatalf("second page of rail reports: %v", rest)
		}
		// The filter form offers each rail and keeps the chosen one selected.
		if !strings.Contains(body, `<option value="reports" selected>reports</option>`) || !strings.Contains(body, `<option value="(default)">(default)</option>`) {
			t.Fatalf("rail filter options:\n%s", body)
		}

		var poisoned am.PoisonedMessage
		if err := f.db.Where("rail = ?", "reports").Take(&poisoned).Error; err != nil {
			t.Fatal(err)
		}
		if _, body := f.get(t, "/am/poisoned/"+poisoned.ID); !strings.Contains(body, "<dt>Rail</dt><dd>reports") {
			t.Fatalf("poisoned detail lacks its rail:\n%s", body)
		}
		if _, body := f.get(t, "/am/messages/ghost-1"); !strings.Contains(body, "<dt>Rail</dt><dd>ghost") {
			t.Fatalf("message detail lacks its rail:\n%s", body)
		}

		// A purge from the filtered poisoned page purges that rail's only.
		if err := f.db.Model(&am.PoisonedMessage{}).Where("1 = 1").Update("poisoned_at", time.Now().Add(-72*time.Hour).UnixMilli()).Error; err != nil {
			t.Fatal(err)
		}
		tok := f.token(t)
		status, body := f.post(t, "/am/poisoned/purge", url.Values{"csrf": {tok}, "older_than": {"1d"}, "rail": {"reports"}}, nil)
		if status != http.StatusOK || !strings.Contains(body, "Purge 1 message") || !strings.Contains(body, "rail reports") {
			t.Fatalf("purge confirmation: %d\n%s", status, body)
		}
		if status, body := f.post(t, "/am/poisoned/purge", url.Values{"csrf": {tok}, "older_than": {"1d"}, "rail": {"reports"}, "confirm": {"yes"}}, nil); status != http.StatusOK && status != http.StatusSeeOther {
			t.Fatalf("purge: %d\n%s", status, body)
		}
		var left []am.PoisonedMessage
		if err := f.db.Find(&left).Error; err != nil || len(left) != 2 || left[0].Rail != "" || left[1].Rail != "" {
			t.Fatalf("after purging rail reports: %+v, %v", left, err)
		}
	})
}
