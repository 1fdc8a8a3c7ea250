package dashboard_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/asyncmonolith/asyncmonolith/dashboard"
)

// The dashboard works however the application mounts it: under a mux pattern that passes
// the whole path, behind http.StripPrefix, or as a server's whole handler; and a path that
// is not clean redirects within the base, never out of it.
func TestDashboardMountings(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite")
	for name, h := range map[string]http.Handler{
		"whole path":         dashboard.New(f.p, dashboard.BasePath("/am/")),
		"behind StripPrefix": http.StripPrefix("/am", dashboard.New(f.p, dashboard.BasePath("/am"))),
		"base without slash": dashboard.New(f.p, dashboard.BasePath("am")),
		// The slash stripped too: "/am/messages" arrives as "messages".
		"behind StripPrefix with the slash": http.StripPrefix("/am/", dashboard.New(f.p, dashboard.BasePath("/am"))),
	} {
		for _, c := range []struct {
			path     string
			status   int
			location string
		}{
			{"/am/", http.StatusOK, ""},
			{"/am/messages?due=no", http.StatusOK, ""},
			{"/am/poisoned", http.StatusOK, ""},
			{"/am", http.StatusOK, ""}, // the overview, its links absolute
			{"/am//messages?due=no", http.StatusTemporaryRedirect, "/am/messages?due=no"},
			{"/am/messages/../poisoned", http.StatusTemporaryRedirect, "/am/poisoned"},
			{"/am/./schedules", http.StatusTemporaryRedirect, "/am/schedules"},
			{"/am/messages/a%2F..%2Fb", http.StatusNotFound, ""}, // an id, not a path to clean
		} {
			if name == "behind StripPrefix with the slash" {
				switch c.path {
				case "/am": // http.StripPrefix's own 404 (an application's mux redirects it to /am/ first)
					c.status = http.StatusNotFound
				case "/am//messages?due=no": // arrives as "/messages"
					c.status, c.location = http.StatusOK, ""
				}
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, c.path, nil))
			if rec.Code != c.status || rec.Header().Get("Location") != c.location {
				t.Errorf("%s: GET %s = %d to %q, want %d to %q", name, c.path, rec.Code, rec.Header().Get("Location"), c.status, c.location)
			}
			if rec.Code == http.StatusOK && !strings.Contains(rec.Body.String(), `href="/am/static/dashboard.css"`) ||
				strings.Contains(rec.Body.String(), `href="messages`) || strings.Contains(rec.Body.String(), `href="poisoned`) {
				t.Errorf("%s: GET %s does not link under /am:\n%s", name, c.path, rec.Body.String())
			}
		}
	}
}
