package browsertest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/dashboard"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"github.com/chromedp/chromedp"
)

// RenderReport is the consumer of the "reports" rail in the rails site; it always fails.
type (
	ReportRequested struct {
		ReportID int `json:"report_id"`
	}
	RenderReport struct{}
)

func (RenderReport) Consume(ctx context.Context, m *am.Message[ReportRequested]) error {
	return errors.New("renderer out of memory")
}

// serveRails serves the dashboard of a plugin with the rails "reports" and "idle" (empty):
// SendEmail on the default rail (3 poisoned, 2 due), RenderReport on "reports" (2
// poisoned, 4 due, 1 delayed), and a hand-written row on "ghost", which no rail runs.
func serveRails(t *testing.T, dialect string) *site {
	t.Helper()
	db := testdb.Open(t, dialect)
	p := am.New(am.Config{MaxAttempts: 1, Logger: slog.New(slog.DiscardHandler), Rails: map[string]am.RailConfig{"reports": {}, "idle": {}}})
	ctx := context.Background()
	if err := errors.Join(db.Use(p), p.Migrate(ctx, db), am.Register[OrderCancelled](p, SendEmail{}),
		am.Register[ReportRequested](p, RenderReport{}, am.WithRail("reports"))); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := am.ProduceNow(ctx, db, OrderCancelled{OrderID: i, Item: "mug"}); err != nil {
			t.Fatal(err)
		}
		if i < 2 {
			if err := am.ProduceNow(ctx, db, ReportRequested{ReportID: i}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for {
		n, err := p.ProcessBatch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	for i := range 2 {
		if err := am.ProduceNow(ctx, db, OrderCancelled{OrderID: 10 + i}, am.At(time.Now().Add(-time.Minute))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 4 {
		if err := am.ProduceNow(ctx, db, ReportRequested{ReportID: 10 + i}, am.At(time.Now().Add(-time.Duration(i+1)*time.Minute))); err != nil {
			t.Fatal(err)
		}
	}
	if err := am.ProduceNow(ctx, db, ReportRequested{ReportID: 99}, am.Delay(time.Hour)); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	if err := db.Create(&am.ConsumerMessage{ID: "ghost-1", CreatedAt: now - 90_000, AvailableAfter: now - 90_000, ConsumerType: "ArchiveOrder",
		PayloadType: "OrderCancelled", Payload: `{"order_id":7}`, InsertID: "ghost-1", Rail: "ghost"}).Error; err != nil {
		t.Fatal(err)
	}
	return &site{db: db, p: p, url: listen(t, "127.0.0.1", dashboard.New(p, dashboard.BasePath("/asyncmonolith")))}
}

// railCell reads the overview's number in the row of a rail (as the page names it).
func railCell(rail, key string) string {
	return fmt.Sprintf(`//table[contains(@class,"rails")]//tr[@data-rail=%q]/td[@data-k=%q]`, rail, key)
}

// TestDashboardRailsInTheBrowser: the overview's rail table shows the database's counts
// for each rail (a configured empty one, and one no rail runs, marked), and following a
// rail's link lists that rail's messages only.
func TestDashboardRailsInTheBrowser(t *testing.T) {
	for _, dialect := range dialects {
		t.Run(dialect, func(t *testing.T) {
			s := serveRails(t, dialect)
			b := newBrowser(t)
			b.do(t, chromedp.Navigate(s.url), chromedp.WaitVisible(chromedp.CSS("#live table.rails")))
			nowMs := time.Now().UnixMilli()
			for _, r := range []struct{ name, shown, configured string }{
				{"", "(default)", "yes"}, {"idle", "idle", "yes"}, {"reports", "reports", "yes"}, {"ghost", "ghost", "not configured"},
			} {
				want := [5]string{
					strconv.FormatInt(s.count(t, &am.ConsumerMessage{}, "rail = ?", r.name), 10),
					strconv.FormatInt(s.count(t, &am.ConsumerMessage{}, "rail = ? AND pending IS NULL", r.name), 10),
					strconv.FormatInt(s.count(t, &am.ConsumerMessage{}, "rail = ? AND available_after <= ?", r.name, nowMs), 10),
					strconv.FormatInt(s.count(t, &am.PoisonedMessage{}, "rail = ?", r.name), 10),
					r.configured,
				}
				got := [5]string{}
				for i, k := range []string{"pending", "running", "due", "poisoned", "configured"} {
					got[i] = get(t, b, chromedp.Text(railCell(r.shown, k)))
				}
				if got != want {
					t.Fatalf("rail %s: page shows pending/running/due/poisoned/configured %v, database holds %v", r.shown, got, want)
				}
			}
			if got := get(t, b, chromedp.Text(railCell("reports", "pending"))); got != "5" {
				t.Fatalf("reports pending %s, want the seeded 5", got)
			}
			if got := get(t, b, chromedp.Text(railCell("reports", "oldest"))); !strings.HasPrefix(got, "4m") {
				t.Fatalf("reports oldest due %q, want about 4m", got)
			}
			b.shot(t, "overview-rails-"+dialect)

			// Follow the rail's link: the messages page lists the reports rail only.
			b.do(t, chromedp.Click(`//table[contains(@class,"rails")]//tr[@data-rail="reports"]/th/a`, chromedp.NodeVisible),
				chromedp.WaitVisible(chromedp.CSS("main table")))
			rails := get(t, b, chromedp.Evaluate[[]string](`[...document.querySelectorAll("main table tbody tr td:nth-child(3)")].map(td => td.textContent)`))
			if len(rails) != 5 {
				t.Fatalf("messages of rail reports: %d rows %v, want 5", len(rails), rails)
			}
			for _, r := range rails {
				if r != "reports" {
					t.Fatalf("messages of rail reports shows a row of rail %q", r)
				}
			}
			if sel := get(t, b, chromedp.Evaluate[string](`document.querySelector('select[name="rail"]').value`)); sel != "reports" {
				t.Fatalf("the rail filter shows %q, want reports", sel)
			}
			b.shot(t, "messages-rail-reports-"+dialect)
			b.noDialogs(t)
		})
	}
}
