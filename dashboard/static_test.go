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
	for _, path := range []string{"/am/static/", "/am/static/?C=M", "/am/static//", "/am/static/nope.css"} {
		status, body := f.get(t, path)
		if status != http.StatusNotFound || strings.Contains(body, "dashboard.css") {
			t.Fatalf("GET %s: %d\n%s", path, status, body)
		}
	}
	for _, path := range []string{"/am/static/dashboard.css", "/am/static/dashboard.js"} {
		if status, body := f.get(t, path); status != http.StatusOK || len(body) < 100 {
			t.Fatalf("GET %s: %d, %d bytes", path, status, len(body))
		}
	}
}
