package dashboard_test

import (
	"context"
	"errors"
	"io"
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
	"gorm.io/gorm"
)

// Job is the payload of the tests' failing consumer.
type Job struct {
	N int `json:"n"`
}

// Failing always fails, so with MaxAttempts 1 every Job is poisoned on its first run.
type Failing struct{}

func (Failing) Consume(ctx context.Context, m *am.Message[Job]) error {
	return errors.New("<script>alert(1)</script> downstream said no")
}

const hostile = `<script>alert(1)</script>`

type fixture struct {
	db  *gorm.DB
	p   *am.Plugin
	srv *httptest.Server
	c   *http.Client
}

// newFixture serves the dashboard of a fresh database under /am/, with three poisoned Jobs,
// two pending ones, and a hand-written pending row whose payload holds a script tag.
func newFixture(t *testing.T, dialect string, opts ...dashboard.Option) *fixture {
	t.Helper()
	db := testdb.Open(t, dialect)
	p := am.New(am.Config{MaxAttempts: 1})
	if err := db.Use(p); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := p.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := am.Register[Job](p, Failing{}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := am.ProduceNow(ctx, db, Job{N: i}, am.InsertID("job-"+string(rune('a'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.ProcessBatch(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := am.ProduceNow(ctx, db, Job{N: 10 + i}, am.Delay(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UnixMilli()
	if err := db.Create(&am.ConsumerMessage{ID: "hand-written", CreatedAt: now, AvailableAfter: now + 3_600_000,
		ConsumerType: "Failing", PayloadType: "Job", Payload: `{"html":"` + hostile + `"}`, InsertID: hostile}).Error; err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/am/", dashboard.New(p, append([]dashboard.Option{dashboard.BasePath("/am")}, opts...)...))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	jar, _ := cookiejar.New(nil)
	return &fixture{db: db, p: p, srv: srv, c: &http.Client{Jar: jar}}
}

func (f *fixture) get(t *testing.T, path string) (int, string) {
	t.Helper()
	res, err := f.c.Get(f.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func (f *fixture) post(t *testing.T, path string, form url.Values, header http.Header) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := f.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// token loads the poisoned page (which sets the cookie) and returns its form token.
func (f *fixture) token(t *testing.T) string {
	t.Helper()
	_, body := f.get(t, "/am/poisoned")
	m := csrfField.FindStringSubmatch(body)
	if m == nil {
		t.Fatal("no csrf token on the poisoned page")
	}
	return m[1]
}

func (f *fixture) poisonedIDs(t *testing.T) []string {
	t.Helper()
	var ids []string
	if err := f.db.Model(&am.PoisonedMessage{}).Order("id").Pluck("id", &ids).Error; err != nil {
		t.Fatal(err)
	}
	return ids
}

func eachDB(t *testing.T, fn func(t *testing.T, dialect string)) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			fn(t, d)
		})
	}
}

func TestDashboardPagesAndEscaping(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		f := newFixture(t, dialect)
		ids := f.poisonedIDs(t)
		for _, path := range []string{"/am/", "/am/overview/live", "/am/messages", "/am/messages?consumer=Failing&due=no&limit=2",
			"/am/messages/hand-written", "/am/poisoned", "/am/poisoned/" + ids[0], "/am/schedules"} {
			status, body := f.get(t, path)
			if status != http.StatusOK {
				t.Fatalf("GET %s = %d: %s", path, status, body)
			}
			if strings.Contains(body, "<script>alert") {
				t.Fatalf("GET %s: unescaped script tag in\n%s", path, body)
			}
		}
		_, body := f.get(t, "/am/overview/live")
		// Failing: 3 pending (2 delayed + the hand-written one), 0 due, 3 poisoned.
		for _, want := range []string{`data-k="pending">3<`, `data-k="due">0<`, `href="/am/poisoned?consumer=Failing&amp;rail=%28default%29">3<`} {
			if !strings.Contains(body, want) {
				t.Fatalf("overview lacks %s:\n%s", want, body)
			}
		}
		_, body = f.get(t, "/am/messages/hand-written")
		if !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") || !strings.Contains(body, "  &#34;html&#34;") {
			t.Fatalf("detail does not show the payload pretty-printed as text:\n%s", body)
		}
		_, body = f.get(t, "/am/poisoned/"+ids[0])
		if !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt; downstream said no") {
			t.Fatalf("poisoned detail does not show the error as text:\n%s", body)
		}
		_, body = f.get(t, "/am/messages?limit=2")
		if !strings.Contains(body, `rel="next" href="/am/messages?after=`) {
			t.Fatalf("first page of 2 of 3 has no next link:\n%s", body)
		}
		if status, _ := f.get(t, "/am/messages/nope"); status != http.StatusNotFound {
			t.Fatalf("missing message: %d", status)
		}
		if status, _ := f.get(t, "/am/messages?after=garbage"); status != http.StatusBadRequest {
			t.Fatalf("bad cursor: %d", status)
		}
		res, err := f.c.Get(f.srv.URL + "/am/")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") ||
			res.Header.Get("X-Frame-Options") != "DENY" || res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("security headers: %v", res.Header)
		}
	})
}

func TestDashboardActionsNeedTokenAndSameOrigin(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite")
	ids := f.poisonedIDs(t)
	tok := f.token(t)
	do := url.Values{"csrf": {tok}, "one": {ids[0]}, "confirm": {"yes"}}
	for name, c := range map[string]struct {
		form   url.Values
		header http.Header
	}{
		"no token":       {url.Values{"one": {ids[0]}, "confirm": {"yes"}}, nil},
		"wrong token":    {url.Values{"csrf": {strings.Repeat("0", 64)}, "one": {ids[0]}, "confirm": {"yes"}}, nil},
		"cross-site":     {do, http.Header{"Sec-Fetch-Site": {"cross-site"}}},
		"same-site":      {do, http.Header{"Sec-Fetch-Site": {"same-site"}}},
		"foreign origin": {do, http.Header{"Origin": {"https://evil.example"}}},
		"null origin":    {do, http.Header{"Origin": {"null"}}},
	} {
		if status, body := f.post(t, "/am/poisoned/delete", c.form, c.header); status != http.StatusForbidden {
			t.Fatalf("%s: POST = %d, want 403: %s", name, status, body)
		}
	}
	if n := len(f.poisonedIDs(t)); n != 3 {
		t.Fatalf("a refused POST deleted something: %d poisoned left", n)
	}
	// The first POST only asks; the second does it.
	status, body := f.post(t, "/am/poisoned/delete", url.Values{"csrf": {tok}, "one": {ids[0]}},
		http.Header{"Origin": {f.srv.URL}, "Sec-Fetch-Site": {"same-origin"}})
	if status != http.StatusOK || !strings.Contains(body, "Delete 1 poisoned message for good?") || len(f.poisonedIDs(t)) != 3 {
		t.Fatalf("confirmation step: %d\n%s", status, body)
	}
	if status, body := f.post(t, "/am/poisoned/delete", do, nil); status != http.StatusOK || !strings.Contains(body, "Deleted 1 poisoned message.") {
		t.Fatalf("confirmed delete: %d\n%s", status, body)
	}
	if n := len(f.poisonedIDs(t)); n != 2 {
		t.Fatalf("after delete: %d poisoned, want 2", n)
	}
}

func TestDashboardRequeueConflictAndPurge(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite")
	ctx := context.Background()
	var first am.PoisonedMessage
	if err := f.db.Order("id").First(&first).Error; err != nil {
		t.Fatal(err)
	}
	if err := am.ProduceNow(ctx, f.db, Job{N: 99}, am.InsertID(first.InsertID), am.Delay(time.Hour)); err != nil {
		t.Fatal(err)
	}
	tok := f.token(t)
	status, body := f.post(t, "/am/poisoned/requeue", url.Values{"csrf": {tok}, "id": {first.ID}, "confirm": {"yes"}}, nil)
	if status != http.StatusConflict || !strings.Contains(body, "pending again") {
		t.Fatalf("conflicting requeue: %d\n%s", status, body)
	}
	status, body = f.post(t, "/am/poisoned/purge", url.Values{"csrf": {tok}, "older_than": {"1h"}}, nil)
	if status != http.StatusOK || !strings.Contains(body, "Purge 0 messages poisoned more than 1h0m0s ago") {
		t.Fatalf("purge confirmation: %d\n%s", status, body)
	}
	if status, _ := f.post(t, "/am/poisoned/purge", url.Values{"csrf": {tok}, "older_than": {"soon"}}, nil); status != http.StatusBadRequest {
		t.Fatalf("bad age: %d", status)
	}
	if err := f.db.Model(&am.PoisonedMessage{}).Where("id = ?", first.ID).Update("poisoned_at", time.Now().Add(-72*time.Hour).UnixMilli()).Error; err != nil {
		t.Fatal(err)
	}
	status, body = f.post(t, "/am/poisoned/purge", url.Values{"csrf": {tok}, "older_than": {"2d"}, "confirm": {"yes"}}, nil)
	if status != http.StatusOK || !strings.Contains(body, "Purged 1 message poisoned more than 48h0m0s ago.") {
		t.Fatalf("purge: %d\n%s", status, body)
	}
	if n := len(f.poisonedIDs(t)); n != 2 {
		t.Fatalf("after purge: %d poisoned, want 2", n)
	}
}

func TestDashboardReadOnly(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite", dashboard.ReadOnly())
	ids := f.poisonedIDs(t)
	for _, path := range []string{"/am/poisoned", "/am/poisoned/" + ids[0], "/am/schedules"} {
		_, body := f.get(t, path)
		if strings.Contains(body, `method="post"`) || strings.Contains(body, `name="csrf"`) || strings.Contains(body, ">Requeue") ||
			strings.Contains(body, ">Delete") || strings.Contains(body, ">Purge") {
			t.Fatalf("read-only %s shows an action:\n%s", path, body)
		}
	}
	if status, _ := f.post(t, "/am/poisoned/delete", url.Values{"one": {ids[0]}, "confirm": {"yes"}}, nil); status != http.StatusForbidden {
		t.Fatalf("read-only POST = %d, want 403", status)
	}
	if n := len(f.poisonedIDs(t)); n != 3 {
		t.Fatalf("read-only POST deleted: %d left", n)
	}
}

func TestDashboardOddIDsAndBytes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite")
	now := time.Now().UnixMilli()
	odd := "odd/id?x=1#frag <b>"
	if err := f.db.Create(&am.PoisonedMessage{ID: odd, ConsumerType: "Failing", PayloadType: "Job", Payload: "\x00\xff<b>bold</b>\xfe",
		InsertID: "\x00nul", LastError: "bad \xff bytes <b>x</b>", PoisonedAt: now}).Error; err != nil {
		t.Fatal(err)
	}
	_, body := f.get(t, "/am/poisoned")
	link := `href="/am/poisoned/odd%2Fid%3Fx=1%23frag%20%3Cb%3E"`
	if !strings.Contains(body, link) || strings.Contains(body, "<b>") {
		t.Fatalf("list: want the link %s and no raw tag:\n%s", link, body)
	}
	status, body := f.get(t, "/am/poisoned/odd%2Fid%3Fx=1%23frag%20%3Cb%3E")
	if status != http.StatusOK || !strings.Contains(body, "&lt;b&gt;bold&lt;/b&gt;") || strings.Contains(body, "<b>") {
		t.Fatalf("detail of an odd id: %d\n%s", status, body)
	}
	// Requeue it by its odd id, through the form.
	tok := f.token(t)
	status, body = f.post(t, "/am/poisoned/requeue", url.Values{"csrf": {tok}, "id": {odd}, "confirm": {"yes"}}, nil)
	if status != http.StatusOK || !strings.Contains(body, "Requeued 1 message") {
		t.Fatalf("requeue of an odd id: %d\n%s", status, body)
	}
	if n := len(f.poisonedIDs(t)); n != 3 {
		t.Fatalf("after requeue: %d poisoned, want 3", n)
	}
	// A long error is shown whole (the page scrolls it), not cut.
	long := strings.Repeat("very long error ", 20000)
	if err := f.db.Create(&am.PoisonedMessage{ID: "long", ConsumerType: "Failing", PayloadType: "Job", Payload: "{}",
		InsertID: "long", LastError: long, PoisonedAt: now}).Error; err != nil {
		t.Fatal(err)
	}
	if status, body := f.get(t, "/am/poisoned/long"); status != http.StatusOK || !strings.Contains(body, long) {
		t.Fatalf("long error: %d, %d bytes", status, len(body))
	}
}

func TestDashboardShowsABreakerPause(t *testing.T) {
	t.Parallel()
	db := testdb.Open(t, "sqlite")
	p := am.New(am.Config{MaxAttempts: 10, BreakerFailures: 2, BreakerCooldown: time.Hour})
	ctx := context.Background()
	if err := errors.Join(db.Use(p), p.Migrate(ctx, db), am.Register[Job](p, Failing{})); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if err := am.ProduceNow(ctx, db, Job{N: i}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.ProcessBatch(ctx); err != nil {
		t.Fatal(err)
	}
	until, ok := p.Paused()["Failing"]
	if !ok {
		t.Fatal("the breaker did not trip")
	}
	rec := httptest.NewRecorder()
	dashboard.New(p).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/overview/live", nil))
	if want := "paused until " + until.UTC().Format("2006-01-02 15:04:05 UTC"); !strings.Contains(rec.Body.String(), want) {
		t.Fatalf("overview lacks %q:\n%s", want, rec.Body.String())
	}
}
