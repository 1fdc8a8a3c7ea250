package dashboard_test

import (
	"math"
	"net/http"
	"net/url"
	"strings"
	"testing"

	am "github.com/asyncmonolith/asyncmonolith"
)

// Hand-written rows with markup in every field a page shows (consumer name, payload type,
// insert id, last error, schedule id, tag, expression and zone) and times at the ends of
// int64, and filters holding markup reflected into the forms and links: every page answers
// 200 and no tag reaches it unescaped.
func TestDashboardEscapesEveryField(t *testing.T) {
	t.Parallel()
	eachDB(t, func(t *testing.T, dialect string) {
		f := newFixture(t, dialect)
		x := `"><img src=x onerror=alert(1)>` + hostile
		errText := x
		tag := x
		if err := f.db.Create(&am.ConsumerMessage{ID: "x1", CreatedAt: math.MinInt64, AvailableAfter: math.MaxInt64,
			ConsumerType: x, PayloadType: x, Payload: `"` + x + `"`, InsertID: x, LastError: &errText}).Error; err != nil {
			t.Fatal(err)
		}
		if err := f.db.Create(&am.PoisonedMessage{ID: "x2", CreatedAt: math.MaxInt64, AvailableAfter: math.MinInt64,
			ConsumerType: x, PayloadType: x, Payload: x, InsertID: x, LastError: x, PoisonedAt: math.MinInt64}).Error; err != nil {
			t.Fatal(err)
		}
		for i, at := range []int64{math.MaxInt64, math.MinInt64} {
			if err := f.db.Create(&am.ScheduledMessage{ID: "s" + x[:i+1], Tag: &tag, AvailableAfter: at, ChronExpression: x,
				ChronTimezone: x[:40], PayloadType: x, Payload: "{}"}).Error; err != nil {
				t.Fatal(err)
			}
		}
		q := url.Values{"consumer": {x}, "payload": {x}, "insert_id": {x}, "tag": {x}, "after": {"1.2." + "eA"}}.Encode()
		for _, path := range []string{"/am/", "/am/overview/live", "/am/messages", "/am/messages/x1", "/am/poisoned", "/am/poisoned/x2",
			"/am/schedules", "/am/messages?" + q, "/am/poisoned?" + q, "/am/schedules?tag=" + url.QueryEscape(x)} {
			status, body := f.get(t, path)
			if status != http.StatusOK {
				t.Fatalf("GET %s = %d:\n%s", path, status, body)
			}
			if strings.Contains(body, "<script>") || strings.Contains(body, "<img") {
				t.Fatalf("GET %s: unescaped markup in\n%s", path, body)
			}
		}
		_, body := f.get(t, "/am/schedules")
		if !strings.Contains(body, "&lt;img src=x onerror=alert(1)&gt;") {
			t.Fatalf("schedules do not show the hostile tag as text:\n%s", body)
		}
	})
}
