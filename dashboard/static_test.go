package dashboard_test

import (
	"net/http"
	"strings"
	"testing"
)

// /static/ serves the dashboard's files, not a listing of them.
func TestDashboardStaticServesFilesOnly(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sqlite")
	for _, path := range []string{"/am/static", "/am/static/", "/am/static/?C=M", "/am/static//", "/am/static/nope.css"} {
		status, body := f.get(t, path)
		if status != http.StatusNotFound || strings.Contains(body, "dashboard.css") {
			t.Fatalf("GET %s: %d\n%s", path, status, body)
		}
	}
	// Without the slash: a 404 too, not the mux's redirect to /static/, outside the base.
	res, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Get(f.srv.URL + "/am/static")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /am/static: %d, Location %q; want 404", res.StatusCode, res.Header.Get("Location"))
	}
	for _, path := range []string{"/am/static/dashboard.css", "/am/static/dashboard.js"} {
		if status, body := f.get(t, path); status != http.StatusOK || len(body) < 100 {
			t.Fatalf("GET %s: %d, %d bytes", path, status, len(body))
		}
	}
}
