package browsertest

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/dashboard"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

var dialects = []string{"sqlite", "postgres"}

// cell reads the overview's number in the row of consumer (data-k names the column).
func cell(consumer, key string) string {
	return fmt.Sprintf(`//tr[th/a[text()=%q]]/td[@data-k=%q]`, consumer, key)
}

func TestDashboardOverviewShowsDatabaseCountsAndRefreshes(t *testing.T) {
	for _, dialect := range dialects {
		t.Run(dialect, func(t *testing.T) {
			s := serve(t, dialect)
			b := newBrowser(t)
			b.do(t, chromedp.Navigate(s.url), chromedp.WaitVisible(chromedp.CSS("#live table")),
				chromedp.Evaluate[chromedp.Void](`window.notReloaded = true`))
			for _, c := range []string{"SendEmail", "IssueRefund"} {
				pending := s.count(t, &am.ConsumerMessage{}, "consumer_type = ?", c)
				due := s.count(t, &am.ConsumerMessage{}, "consumer_type = ? AND available_after <= ?", c, time.Now().UnixMilli())
				poisoned := s.count(t, &am.PoisonedMessage{}, "consumer_type = ?", c)
				got := [3]string{get(t, b, chromedp.Text(cell(c, "pending"))), get(t, b, chromedp.Text(cell(c, "due"))),
					get(t, b, chromedp.Text(cell(c, "poisoned")))}
				want := [3]string{strconv.FormatInt(pending, 10), strconv.FormatInt(due, 10), strconv.FormatInt(poisoned, 10)}
				if got != want || pending == 0 || poisoned == 0 {
					t.Fatalf("%s: page shows pending/due/poisoned %v, database holds %v", c, got, want)
				}
			}
			total := s.count(t, &am.ConsumerMessage{}, "")
			if got := b.text(t, `[data-k="total-pending"]`); got != strconv.FormatInt(total, 10) {
				t.Fatalf("total pending %s, database %d", got, total)
			}
			b.shot(t, "overview-"+dialect)
			// New rows show up without a reload: the page fetches its table every 5 s.
			for i := range 5 {
				if err := am.ProduceNow(context.Background(), s.db, OrderCancelled{OrderID: 900 + i}); err != nil {
					t.Fatal(err)
				}
			}
			want := strconv.FormatInt(total+10, 10)
			b.do(t, chromedp.Poll[chromedp.Void](fmt.Sprintf(`document.querySelector('[data-k="total-pending"]').textContent === %q`, want),
				chromedp.WithPollingTimeout(15*time.Second)))
			if !get(t, b, chromedp.Evaluate[bool](`window.notReloaded === true`)) {
				t.Fatal("the overview reloaded the whole page")
			}
			b.noDialogs(t)
		})
	}
}

func TestDashboardRequeueFromTheBrowser(t *testing.T) {
	for _, dialect := range dialects {
		t.Run(dialect, func(t *testing.T) {
			s := serve(t, dialect)
			b := newBrowser(t)
			var target am.PoisonedMessage
			if err := s.db.Where("consumer_type = ? AND insert_id = ?", "IssueRefund", "order:102").Take(&target).Error; err != nil {
				t.Fatal(err)
			}
			b.do(t, chromedp.Navigate(s.url+"poisoned"), chromedp.WaitVisible(chromedp.CSS("table")))
			b.shot(t, "poisoned-"+dialect)
			b.do(t, chromedp.Click(chromedp.CSS(fmt.Sprintf(`td.row-actions button:not(.danger)[value=%q]`, target.ID))),
				chromedp.WaitVisible(chromedp.CSS("#confirm")))
			if q := b.text(t, "#question"); !strings.Contains(q, "Requeue 1 poisoned message") {
				t.Fatalf("confirmation says %q", q)
			}
			if s.count(t, &am.ConsumerMessage{}, "id = ?", target.ID) != 0 {
				t.Fatal("requeued before the confirmation")
			}
			b.shot(t, "confirm-requeue-"+dialect)
			b.do(t, chromedp.Click(chromedp.CSS("#confirm")), chromedp.WaitVisible(chromedp.CSS("#result")))
			if r := b.text(t, "#result"); !strings.Contains(r, "Requeued 1 message") {
				t.Fatalf("result says %q", r)
			}
			b.shot(t, "requeued-"+dialect)
			b.reloadShowsTheSameResult(t, "Requeued 1 message", "requeued-reloaded-"+dialect)
			var back am.ConsumerMessage
			if err := s.db.Where("id = ?", target.ID).Take(&back).Error; err != nil || back.Attempts != 0 || back.InsertID != "order:102" {
				t.Fatalf("requeued row: %+v, %v", back, err)
			}
			if s.count(t, &am.PoisonedMessage{}, "id = ?", target.ID) != 0 {
				t.Fatal("still poisoned after the requeue")
			}
			// A second requeue of a message whose insert id is pending again is a conflict, shown as such.
			var twin am.PoisonedMessage
			if err := s.db.Where("consumer_type = ? AND insert_id = ?", "IssueRefund", "order:103").Take(&twin).Error; err != nil {
				t.Fatal(err)
			}
			if err := am.ProduceNow(context.Background(), s.db, OrderCancelled{OrderID: 103}, am.InsertID("order:103"), am.Delay(time.Hour)); err != nil {
				t.Fatal(err)
			}
			b.do(t, chromedp.Navigate(s.url+"poisoned/"+twin.ID), chromedp.WaitVisible(chromedp.CSS(`button[name="one"]`)),
				chromedp.SendKeys(chromedp.CSS(`input[name="delay"]`), "10m"),
				chromedp.Click(chromedp.CSS(`button[name="one"]:not(.danger)`)), chromedp.WaitVisible(chromedp.CSS("#confirm")))
			if q := b.text(t, "#question"); !strings.Contains(q, "due in 10m0s") {
				t.Fatalf("confirmation says %q", q)
			}
			b.do(t, chromedp.Click(chromedp.CSS("#confirm")), chromedp.WaitVisible(chromedp.CSS("#result")))
			if r := b.text(t, "#result"); !strings.Contains(r, "Requeued 0 messages") || !strings.Contains(r, "pending again") {
				t.Fatalf("conflict result says %q", r)
			}
			b.shot(t, "requeue-conflict-"+dialect)
			b.reloadShowsTheSameResult(t, "Requeued 0 messages; the others stay poisoned", "requeue-conflict-reloaded-"+dialect)
			if !get(t, b, chromedp.Evaluate[bool](`document.getElementById("result").classList.contains("conflict")`)) {
				t.Fatal("the reloaded conflict is not shown as a conflict")
			}
			if s.count(t, &am.PoisonedMessage{}, "id = ?", twin.ID) != 1 {
				t.Fatal("the conflicting message left poisoned_messages")
			}
			b.noDialogs(t)
		})
	}
}

func TestDashboardDeleteAndPurgeAskFirst(t *testing.T) {
	s := serve(t, "sqlite")
	b := newBrowser(t)
	var ids []string
	if err := s.db.Model(&am.PoisonedMessage{}).Where("consumer_type = ?", "SendEmail").Order("id").Limit(2).Pluck("id", &ids).Error; err != nil {
		t.Fatal(err)
	}
	before := s.count(t, &am.PoisonedMessage{}, "")
	b.do(t, chromedp.Navigate(s.url+"poisoned?consumer=SendEmail"), chromedp.WaitVisible(chromedp.CSS("table")),
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`input[name="id"][value=%q]`, ids[0]))),
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`input[name="id"][value=%q]`, ids[1]))),
		chromedp.Click(`//button[text()="Delete selected"]`), chromedp.WaitVisible(chromedp.CSS("#confirm")))
	if q := b.text(t, "#question"); !strings.Contains(q, "Delete 2 poisoned messages for good?") {
		t.Fatalf("delete confirmation says %q", q)
	}
	if n := s.count(t, &am.PoisonedMessage{}, ""); n != before {
		t.Fatalf("deleted before the confirmation: %d → %d", before, n)
	}
	b.shot(t, "confirm-delete")
	// Cancel leaves everything; confirming deletes exactly the two.
	b.do(t, chromedp.Click(`//a[text()="Cancel"]`), chromedp.WaitVisible(chromedp.CSS("table")))
	if n := s.count(t, &am.PoisonedMessage{}, ""); n != before {
		t.Fatalf("cancel deleted: %d → %d", before, n)
	}
	b.do(t, chromedp.Navigate(s.url+"poisoned?consumer=SendEmail"), chromedp.WaitVisible(chromedp.CSS("table")),
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`input[name="id"][value=%q]`, ids[0]))),
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`input[name="id"][value=%q]`, ids[1]))),
		chromedp.Click(`//button[text()="Delete selected"]`), chromedp.WaitVisible(chromedp.CSS("#confirm")),
		chromedp.Click(chromedp.CSS("#confirm")), chromedp.WaitVisible(chromedp.CSS("#result")))
	if r := b.text(t, "#result"); r != "Deleted 2 poisoned messages." {
		t.Fatalf("delete result %q", r)
	}
	if n := s.count(t, &am.PoisonedMessage{}, "id IN ?", ids); n != 0 || s.count(t, &am.PoisonedMessage{}, "") != before-2 {
		t.Fatalf("after delete: %d of the two left, %d in all", n, s.count(t, &am.PoisonedMessage{}, ""))
	}
	// Purge: make three old, purge older than 1 day.
	var old []string
	if err := s.db.Model(&am.PoisonedMessage{}).Where("consumer_type = ?", "IssueRefund").Order("id").Limit(3).Pluck("id", &old).Error; err != nil {
		t.Fatal(err)
	}
	if err := s.db.Model(&am.PoisonedMessage{}).Where("id IN ?", old).Update("poisoned_at", time.Now().Add(-50*time.Hour).UnixMilli()).Error; err != nil {
		t.Fatal(err)
	}
	before = s.count(t, &am.PoisonedMessage{}, "")
	b.do(t, chromedp.Navigate(s.url+"poisoned"), chromedp.WaitVisible(chromedp.CSS(`input[name="older_than"]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name="older_than"]`), "1d"),
		chromedp.Click(chromedp.CSS(`form.purge button`)), chromedp.WaitVisible(chromedp.CSS("#confirm")))
	if q := b.text(t, "#question"); !strings.Contains(q, "Purge 3 messages poisoned more than 24h0m0s ago (all consumers)") {
		t.Fatalf("purge confirmation says %q", q)
	}
	if n := s.count(t, &am.PoisonedMessage{}, ""); n != before {
		t.Fatalf("purged before the confirmation: %d → %d", before, n)
	}
	b.shot(t, "confirm-purge")
	b.do(t, chromedp.Click(chromedp.CSS("#confirm")), chromedp.WaitVisible(chromedp.CSS("#result")))
	if r := b.text(t, "#result"); r != "Purged 3 messages poisoned more than 24h0m0s ago." {
		t.Fatalf("purge result %q", r)
	}
	if n := s.count(t, &am.PoisonedMessage{}, "id IN ?", old); n != 0 || s.count(t, &am.PoisonedMessage{}, "") != before-3 {
		t.Fatalf("after purge: %d of the old left", n)
	}
	// Another message turns old; reloading the result purges nothing more.
	var older string
	if err := s.db.Model(&am.PoisonedMessage{}).Where("consumer_type = ?", "IssueRefund").Order("id").Limit(1).Pluck("id", &older).Error; err != nil {
		t.Fatal(err)
	}
	if err := s.db.Model(&am.PoisonedMessage{}).Where("id = ?", older).Update("poisoned_at", time.Now().Add(-50*time.Hour).UnixMilli()).Error; err != nil {
		t.Fatal(err)
	}
	b.reloadShowsTheSameResult(t, "Purged 3 messages poisoned more than 24h0m0s ago.", "purged-reloaded")
	if n := s.count(t, &am.PoisonedMessage{}, "id = ?", older); n != 1 || s.count(t, &am.PoisonedMessage{}, "") != before-3 {
		t.Fatalf("reloading the purge's result purged again: %d of the newly old left, %d in all (want %d)", n, s.count(t, &am.PoisonedMessage{}, ""), before-3)
	}
	// Schedules: next run in the schedule's zone and in the viewer's (New York here), then
	// delete one, with confirmation.
	if _, err := chromedp.Call(b.ctx, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: "America/New_York"}); err != nil {
		t.Fatal(err)
	}
	b.do(t, chromedp.Navigate(s.url+"schedules"), chromedp.WaitVisible(chromedp.CSS("table")))
	var sched am.ScheduledMessage
	if err := s.db.Where("tag = ?", "reports").Take(&sched).Error; err != nil {
		t.Fatal(err)
	}
	next := time.UnixMilli(sched.AvailableAfter)
	paris, _ := time.LoadLocation("Europe/Paris")
	if got, want := get(t, b, chromedp.Text(`//tr[td[text()="reports"]]/td[6]`)), next.In(paris).Format("2006-01-02 15:04:05 MST"); got != want {
		t.Fatalf("next run in the schedule's zone %q, want %q", got, want)
	}
	local := get(t, b, chromedp.Text(`//tr[td[text()="reports"]]/td/time`))
	if ny, _ := time.LoadLocation("America/New_York"); !strings.Contains(local, next.In(ny).Format("3:04:05 PM")) || !strings.Contains(local, "EST") {
		t.Fatalf("next run in the viewer's zone %q, want %s EST", local, next.In(ny).Format("3:04:05 PM"))
	}
	b.shot(t, "schedules")
	b.do(t, chromedp.Click(`//tr[td[text()="reports"]]//button`), chromedp.WaitVisible(chromedp.CSS("#confirm")))
	if n := s.count(t, &am.ScheduledMessage{}, ""); n != 2 {
		t.Fatalf("schedule deleted before the confirmation: %d left", n)
	}
	b.do(t, chromedp.Click(chromedp.CSS("#confirm")), chromedp.WaitVisible(chromedp.CSS("#result")))
	if n := s.count(t, &am.ScheduledMessage{}, "tag = ?", "reports"); n != 0 || s.count(t, &am.ScheduledMessage{}, "") != 1 {
		t.Fatalf("after the schedule delete: %d reports schedules left", n)
	}
	b.reloadShowsTheSameResult(t, "Deleted schedule "+sched.ID+".", "schedule-deleted-reloaded")
	b.noDialogs(t)
}

// reloadShowsTheSameResult checks that the page shows an action's result at its own GET
// address (Post/Redirect/Get), then reloads it: the same result shows, and no form is sent
// again (the caller checks the database).
func (b *browser) reloadShowsTheSameResult(t *testing.T, want, shot string) {
	t.Helper()
	if r := b.text(t, "#result"); !strings.Contains(r, want) {
		t.Fatalf("result %q, want %q", r, want)
	}
	path := get(t, b, chromedp.Evaluate[string](`location.pathname`))
	if !strings.HasPrefix(path, "/asyncmonolith/result/") {
		t.Fatalf("the result is shown at %s, the action's address, not at a result page of its own", path)
	}
	b.do(t, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#result")))
	if r := b.text(t, "#result"); !strings.Contains(r, want) {
		t.Fatalf("after a reload the result says %q, want %q", r, want)
	}
	b.shot(t, shot)
}

func TestDashboardRendersScriptAsText(t *testing.T) {
	s := serve(t, "sqlite")
	b := newBrowser(t)
	for _, path := range []string{"", "messages", "messages/hostile-pending", "poisoned", "poisoned/hostile-poisoned", "schedules"} {
		b.do(t, chromedp.Navigate(s.url+path), chromedp.WaitReady(chromedp.CSS("main")))
		scripts := get(t, b, chromedp.Evaluate[int](`document.querySelectorAll("script").length`))
		if scripts != 1 {
			t.Fatalf("%s: %d script elements, want only the dashboard's own", path, scripts)
		}
		body := b.text(t, "main")
		if path != "" && !strings.Contains(body, hostile) {
			t.Fatalf("%s: the script tag is not shown as text:\n%s", path, body)
		}
	}
	if got := b.text(t, "main"); !strings.Contains(got, hostile) {
		t.Fatal("schedules page lacks the hostile tag as text")
	}
	b.do(t, chromedp.Navigate(s.url+"poisoned/hostile-poisoned"), chromedp.WaitVisible(chromedp.CSS("pre.payload")))
	if got := b.text(t, "pre.error"); got != hostile+" in the error text" {
		t.Fatalf("error shown as %q", got)
	}
	if got := b.text(t, "pre.payload"); !strings.Contains(got, `"item": "`+hostile+`"`) {
		t.Fatalf("payload shown as %q", got)
	}
	b.shot(t, "poisoned-detail")
	b.do(t, chromedp.Navigate(s.url+"messages/hostile-pending"), chromedp.WaitVisible(chromedp.CSS("pre.payload")))
	b.shot(t, "message-detail")
	b.do(t, chromedp.Navigate(s.url+"messages"), chromedp.WaitVisible(chromedp.CSS("table")))
	b.shot(t, "messages")
	// On a phone: the page fits its width (wide tables scroll inside their box).
	b.do(t, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile), chromedp.Navigate(s.url+"poisoned"), chromedp.WaitVisible(chromedp.CSS("table")))
	if w := get(t, b, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); w > 390 {
		t.Fatalf("on a 390 px phone the page is %d px wide", w)
	}
	b.shot(t, "poisoned-phone")
	b.do(t, chromedp.Navigate(s.url), chromedp.WaitVisible(chromedp.CSS("#live table")))
	if w := get(t, b, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); w > 390 {
		t.Fatalf("on a 390 px phone the overview is %d px wide", w)
	}
	b.shot(t, "overview-phone")
	// Give a dialog that escaped the escaping a moment to open.
	b.do(t, chromedp.Sleep(300*time.Millisecond))
	b.noDialogs(t)
}

func TestDashboardRefusesForgedCrossSitePost(t *testing.T) {
	s := serve(t, "sqlite")
	b := newBrowser(t)
	var id string
	if err := s.db.Model(&am.PoisonedMessage{}).Order("id").Limit(1).Pluck("id", &id).Error; err != nil {
		t.Fatal(err)
	}
	// The browser has visited the dashboard (it holds its cookie), then a page on another
	// site posts a confirmed delete to it.
	b.do(t, chromedp.Navigate(s.url+"poisoned"), chromedp.WaitVisible(chromedp.CSS("table")))
	target := s.url + "poisoned/delete"
	evil := listen(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<!doctype html><form id="f" method="post" action="%s"><input name="one" value="%s"><input name="confirm" value="yes"><input name="csrf" value="%s"></form><script>document.getElementById("f").submit()</script>`,
			target, id, strings.Repeat("a", 64))
	}))
	evil = strings.Replace(evil, "127.0.0.1", "localhost", 1) // another site, not just another port
	before := s.count(t, &am.PoisonedMessage{}, "")
	b.do(t, chromedp.Navigate(evil), chromedp.Poll[chromedp.Void](`location.pathname.endsWith("/poisoned/delete") && document.readyState === "complete"`,
		chromedp.WithPollingTimeout(10*time.Second)))
	if body := b.text(t, "body"); !strings.Contains(body, "cross-site or unauthenticated request refused") {
		t.Fatalf("forged POST answered %q", body)
	}
	if n := s.count(t, &am.PoisonedMessage{}, ""); n != before || s.count(t, &am.PoisonedMessage{}, "id = ?", id) != 1 {
		t.Fatalf("the forged POST deleted: %d → %d", before, n)
	}
}

func TestDashboardReadOnlyInTheBrowser(t *testing.T) {
	s := serve(t, "sqlite", dashboard.ReadOnly())
	b := newBrowser(t)
	for _, path := range []string{"", "poisoned", "poisoned/hostile-poisoned", "schedules", "messages"} {
		b.do(t, chromedp.Navigate(s.url+path), chromedp.WaitReady(chromedp.CSS("main")))
		actions := get(t, b, chromedp.Evaluate[int](`document.querySelectorAll('form[method="post"], button[name="one"], input[name="csrf"], input[name="id"]').length`))
		if actions != 0 {
			t.Fatalf("read-only %s shows %d action elements", path, actions)
		}
	}
	b.do(t, chromedp.Navigate(s.url+"poisoned"), chromedp.WaitVisible(chromedp.CSS("table")))
	b.shot(t, "poisoned-read-only")
	status := get(t, b, chromedp.Evaluate[int](`fetch("poisoned/purge", {method: "POST", body: new URLSearchParams({older_than: "1s", confirm: "yes"})}).then(r => r.status)`,
		chromedp.EvalAwaitPromise))
	if status != http.StatusForbidden {
		t.Fatalf("read-only POST from the page: %d, want 403", status)
	}
	if n := s.count(t, &am.PoisonedMessage{}, ""); n != 13 {
		t.Fatalf("read-only POST purged: %d left, want 13", n)
	}
}

// TestDashboardScreenshotForREADME writes the docs' dashboard screenshot when AM_DASHBOARD_PNG
// names a file (see docs/operations.md, Dashboard); otherwise it only checks the page.
func TestDashboardScreenshotForREADME(t *testing.T) {
	out := os.Getenv("AM_DASHBOARD_PNG")
	if out == "" {
		t.Skip("set AM_DASHBOARD_PNG=path/to/dashboard.png to regenerate docs/dashboard.png")
	}
	s := serve(t, "sqlite")
	b := newBrowser(t)
	b.shots = t.TempDir()
	b.do(t, chromedp.Navigate(s.url+"poisoned"), chromedp.WaitVisible(chromedp.CSS("table")))
	path := b.shot(t, "readme")
	png, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// When the database goes away under an open overview, the next refresh says so above the
// table it keeps (not a blank page, not silently stale numbers), and a reload shows the
// error too.
func TestDashboardOverviewSaysWhenTheDatabaseIsDown(t *testing.T) {
	s := serve(t, "sqlite")
	b := newBrowser(t)
	b.do(t, chromedp.Navigate(s.url), chromedp.WaitVisible(chromedp.CSS("#live table")))
	if get(t, b, chromedp.Evaluate[bool](`document.getElementById("live-error").hidden`)) != true {
		t.Fatal("the refresh error shows before any refresh failed")
	}
	sqlDB, err := s.db.DB()
	if err != nil {
		t.Fatal(err)
	}
	if err := sqlDB.Close(); err != nil {
		t.Fatal(err)
	}
	b.do(t, chromedp.Poll[chromedp.Void](`!document.getElementById("live-error").hidden`, chromedp.WithPollingTimeout(15*time.Second)))
	msg := b.text(t, "#live-error")
	if !strings.Contains(msg, "Refresh failed: HTTP 500") || !strings.Contains(msg, "database is closed") || !strings.Contains(msg, "The counts below are from") {
		t.Fatalf("refresh error = %q", msg)
	}
	if got := b.text(t, `[data-k="total-pending"]`); got == "" {
		t.Fatal("the table went blank")
	}
	b.shot(t, "overview-database-down")
	b.do(t, chromedp.Navigate(s.url), chromedp.WaitVisible(chromedp.CSS("#result")))
	if got := b.text(t, "#result"); !strings.Contains(got, "database is closed") {
		t.Fatalf("reloaded overview with the database down shows %q", got)
	}
	b.noDialogs(t)
}
