package dashboard_test

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
)

var resultPath = regexp.MustCompile(`^/am/result/[0-9a-f]{32}$`)

// A confirmed action answers 303 See Other to a GET page that shows its result: fetching
// that page again (a reload, Back) shows the same result and runs nothing; another browser
// does not see it; a form posted again without a fresh confirmation is refused as before.
func TestDashboardActionRedirectsToItsResult(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		f := newFixture(t, dialect)
		ids := f.poisonedIDs(t)
		tok := f.token(t)
		noFollow := &http.Client{Jar: f.c.Jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		post := func(path string, form url.Values) string {
			t.Helper()
			res, err := noFollow.PostForm(f.srv.URL+path, form)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			loc := res.Header.Get("Location")
			if res.StatusCode != http.StatusSeeOther || !resultPath.MatchString(loc) {
				t.Fatalf("POST %s: %d, Location %q; want 303 to /am/result/…", path, res.StatusCode, loc)
			}
			return loc
		}
		// Purge: one old poisoned message goes; after it another turns old; the result
		// page, fetched again, still says one and deletes nothing more.
		if err := f.db.Model(&am.PoisonedMessage{}).Where("id = ?", ids[0]).Update("poisoned_at", 1).Error; err != nil {
			t.Fatal(err)
		}
		loc := post("/am/poisoned/purge", url.Values{"csrf": {tok}, "older_than": {"1h"}, "confirm": {"yes"}})
		if err := f.db.Model(&am.PoisonedMessage{}).Where("id = ?", ids[1]).Update("poisoned_at", 1).Error; err != nil {
			t.Fatal(err)
		}
		for range 2 {
			status, body := f.get(t, loc)
			if status != http.StatusOK || !strings.Contains(body, "Purged 1 message poisoned more than 1h0m0s ago.") {
				t.Fatalf("result page: %d\n%s", status, body)
			}
		}
		if got := f.poisonedIDs(t); len(got) != 2 || got[0] != ids[1] {
			t.Fatalf("after the purge and two views of its result: %v, want %v", got, ids[1:])
		}
		// A conflict keeps its status and says so on its page.
		if err := am.ProduceNow(t.Context(), f.db, Job{N: 1}, am.InsertID("job-b")); err != nil {
			t.Fatal(err)
		}
		var second am.PoisonedMessage
		if err := f.db.Where("id = ?", ids[1]).Take(&second).Error; err != nil || second.InsertID != "job-b" {
			t.Fatalf("fixture: %+v %v", second, err)
		}
		loc = post("/am/poisoned/requeue", url.Values{"csrf": {tok}, "id": {ids[1]}, "confirm": {"yes"}})
		for range 2 {
			status, body := f.get(t, loc)
			if status != http.StatusConflict || !strings.Contains(body, `class="result conflict"`) || !strings.Contains(body, "Requeued 0 messages; the others stay poisoned") {
				t.Fatalf("conflict result page: %d\n%s", status, body)
			}
		}
		// Another browser (its own cookie) gets no one else's result.
		jar, _ := cookiejar.New(nil)
		res, err := (&http.Client{Jar: jar}).Get(f.srv.URL + loc)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "not repeated") || strings.Contains(string(body), "conflict") {
			t.Fatalf("another browser's view of the result: %d\n%s", res.StatusCode, body)
		}
		if status, body := f.get(t, "/am/result/nope"); status != http.StatusNotFound || !strings.Contains(body, "not here") {
			t.Fatalf("unknown result: %d\n%s", status, body)
		}
		// A GET cannot act (this one asks for a poisoned message with id "purge").
		if status, _ := f.get(t, "/am/poisoned/purge?older_than=1s&confirm=yes&csrf="+tok); status != http.StatusNotFound {
			t.Fatalf("GET of an action: %d, want 404", status)
		}
		if got := f.poisonedIDs(t); len(got) != 2 {
			t.Fatalf("poisoned after all: %v", got)
		}
	})
}
