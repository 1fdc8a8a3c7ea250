package dashboard_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/dashboard"
)

// Bytes that no browser form carries back and PostgreSQL refuses in a query (NUL, invalid
// UTF-8), in every filter, cursor, path id and form field: a clear 400 on every database,
// never the database's error as a 500, and nothing changed.
func TestDashboardRefusesBytesNoFormCarries(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		f := newFixture(t, dialect)
		for _, path := range []string{
			"/am/messages?consumer=%00", "/am/messages?consumer=%ff", "/am/messages?payload=x%00", "/am/messages?insert_id=%c3",
			"/am/messages?after=1.2.%00", "/am/messages?after=1.2.%ff", "/am/poisoned?consumer=%00", "/am/poisoned?after=1.2.%fe",
			"/am/schedules?tag=%00", "/am/schedules?after=1.2.%ff", "/am/messages/%00", "/am/messages/a%ff", "/am/poisoned/%00",
		} {
			if status, body := f.get(t, path); status != http.StatusBadRequest || !strings.Contains(body, "NUL byte or invalid UTF-8") {
				t.Errorf("GET %s = %d, want 400 naming the bytes:\n%.600s", path, status, body)
			}
		}
		tok := f.token(t)
		for _, c := range []struct {
			path string
			form url.Values
		}{
			{"/am/poisoned/requeue", url.Values{"id": {"\x00"}}},
			{"/am/poisoned/requeue", url.Values{"one": {"\xff"}}},
			{"/am/poisoned/delete", url.Values{"id": {f.poisonedIDs(t)[0], "a\x00"}}},
			{"/am/poisoned/purge", url.Values{"older_than": {"1h"}, "consumer": {"\x00"}}},
			{"/am/poisoned/purge", url.Values{"older_than": {"1h"}, "payload": {"\xc3"}}},
			{"/am/schedules/delete", url.Values{"one": {"\xff"}}},
		} {
			c.form.Set("csrf", tok)
			c.form.Set("confirm", "yes")
			if status, body := f.post(t, c.path, c.form, nil); status != http.StatusBadRequest || !strings.Contains(body, "NUL byte or invalid UTF-8") {
				t.Errorf("POST %s %q = %d, want 400:\n%.600s", c.path, c.form, status, body)
			}
		}
		if n := len(f.poisonedIDs(t)); n != 3 {
			t.Fatalf("a refused POST changed the poisoned table: %d left, want 3", n)
		}
	})
}

// A selection is taken once per id, and one larger than a page (or than net/url's limit on
// form fields) is a clear 400, not a token reported missing.
func TestDashboardSelections(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite")
	ids := f.poisonedIDs(t)
	tok := f.token(t)
	status, body := f.post(t, "/am/poisoned/requeue", url.Values{"csrf": {tok}, "id": {ids[0], ids[0], ids[1], ""}}, nil)
	if status != http.StatusOK || !strings.Contains(body, "Requeue 2 poisoned messages") || strings.Count(body, `name="id"`) != 2 {
		t.Fatalf("a duplicated selection: %d\n%s", status, body)
	}
	status, body = f.post(t, "/am/poisoned/requeue", url.Values{"csrf": {tok}, "id": {ids[0], ids[0]}, "confirm": {"yes"}}, nil)
	if status != http.StatusOK || !strings.Contains(body, "Requeued 1 message:") || strings.Count(body, "/am/messages/"+ids[0]) != 1 {
		t.Fatalf("a duplicated id, confirmed: %d\n%s", status, body)
	}
	for _, n := range []int{501, 10_000, 70_000} {
		many := make([]string, n)
		for i := range many {
			many[i] = fmt.Sprintf("id-%06d", i)
		}
		many[0] = ids[1]
		for _, path := range []string{"/am/poisoned/requeue", "/am/poisoned/delete"} {
			status, body := f.post(t, path, url.Values{"csrf": {tok}, "id": many, "confirm": {"yes"}}, nil)
			if status != http.StatusBadRequest || !(strings.Contains(body, "at most 500 at a time") || strings.Contains(body, "form:")) {
				t.Errorf("POST %s with %d ids = %d, want 400:\n%.600s", path, n, status, body)
			}
		}
	}
	if got := len(f.poisonedIDs(t)); got != 2 {
		t.Fatalf("poisoned after the refused selections: %d, want 2", got)
	}
}

// Two instances behind a load balancer: a form rendered by one and posted to the other works
// when they share a CSRFKey, and is refused with a hint when each drew its own.
func TestDashboardInstancesShareACSRFKey(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite")
	ids := f.poisonedIDs(t)
	key := bytes.Repeat([]byte{7}, 32)
	for _, shared := range []bool{false, true} {
		var opts []dashboard.Option
		if shared {
			opts = append(opts, dashboard.CSRFKey(key))
		}
		a := dashboard.New(f.p, append(opts, dashboard.BasePath("/am"))...)
		b := dashboard.New(f.p, append(opts, dashboard.BasePath("/am"))...)
		rec := httptest.NewRecorder()
		a.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/am/poisoned", nil))
		m := csrfField.FindStringSubmatch(rec.Body.String())
		cookies := rec.Result().Cookies()
		if m == nil || len(cookies) != 1 {
			t.Fatalf("instance a set no token: %v", cookies)
		}
		form := url.Values{"csrf": {m[1]}, "one": {ids[0]}}
		req := httptest.NewRequest(http.MethodPost, "/am/poisoned/delete", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(cookies[0])
		rec = httptest.NewRecorder()
		b.ServeHTTP(rec, req)
		switch {
		case shared && rec.Code != http.StatusOK:
			t.Fatalf("shared key: instance b refused a's form: %d %s", rec.Code, rec.Body)
		case !shared && (rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "CSRFKey")):
			t.Fatalf("own keys: instance b answered a's form with %d %s, want 403 naming CSRFKey", rec.Code, rec.Body)
		}
	}
}

// Ids that vanished between the list and the confirmation: a requeue moves nothing and says
// why, with a way back; a delete deletes the rest and says how many were gone.
func TestDashboardActionsOnVanishedIDs(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite")
	ids := f.poisonedIDs(t)
	tok := f.token(t)
	if err := f.db.Delete(&am.PoisonedMessage{}, "id = ?", ids[0]).Error; err != nil {
		t.Fatal(err)
	}
	status, body := f.post(t, "/am/poisoned/requeue", url.Values{"csrf": {tok}, "id": {ids[0], ids[1]}, "confirm": {"yes"}}, nil)
	if status != http.StatusNotFound || !strings.Contains(body, "Nothing was requeued") || !strings.Contains(body, "1 of 2 ids") ||
		!strings.Contains(body, `href="/am/poisoned"`) {
		t.Fatalf("requeue with a vanished id: %d\n%s", status, body)
	}
	if n := len(f.poisonedIDs(t)); n != 2 {
		t.Fatalf("after the refused requeue: %d poisoned, want 2", n)
	}
	status, body = f.post(t, "/am/poisoned/delete", url.Values{"csrf": {tok}, "id": {ids[0], ids[1]}, "confirm": {"yes"}}, nil)
	if status != http.StatusOK || !strings.Contains(body, "Deleted 1 poisoned message. 1 of the 2 selected were gone already") {
		t.Fatalf("delete with a vanished id: %d\n%s", status, body)
	}
	if got := f.poisonedIDs(t); len(got) != 1 || got[0] != ids[2] {
		t.Fatalf("after the delete: %v, want only %s", got, ids[2])
	}
}

// Behind a reverse proxy that rewrites Host, a browser's same-origin POST (Sec-Fetch-Site:
// same-origin) goes through although its Origin names the public host; without
// Sec-Fetch-Site, or with it saying cross-site, the Origin check still refuses it.
func TestDashboardSameOriginBehindAProxyThatRewritesHost(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite")
	ids := f.poisonedIDs(t)
	h := dashboard.New(f.p, dashboard.BasePath("/am"))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/am/poisoned", nil))
	m := csrfField.FindStringSubmatch(rec.Body.String())
	cookies := rec.Result().Cookies()
	if m == nil || len(cookies) != 1 {
		t.Fatal("no token")
	}
	for _, c := range []struct {
		site string
		want int
	}{{"same-origin", http.StatusOK}, {"", http.StatusForbidden}, {"cross-site", http.StatusForbidden}, {"same-site", http.StatusForbidden}} {
		form := url.Values{"csrf": {m[1]}, "one": {ids[0]}}
		req := httptest.NewRequest(http.MethodPost, "/am/poisoned/delete", strings.NewReader(form.Encode()))
		req.Host = "10.0.0.5:8080" // what the proxy forwards
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", "https://admin.example.com")
		if c.site != "" {
			req.Header.Set("Sec-Fetch-Site", c.site)
		}
		req.AddCookie(cookies[0])
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != c.want {
			t.Fatalf("Sec-Fetch-Site %q, Origin of the public host: %d, want %d: %s", c.site, rec.Code, c.want, rec.Body)
		}
	}
}
