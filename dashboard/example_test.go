package dashboard_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/dashboard"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Mount the dashboard on the application's own mux, under a prefix of its choice, behind
// whatever authentication the application uses for admin pages.
func ExampleNew() {
	dir, _ := os.MkdirTemp("", "am-dashboard-example-")
	defer os.RemoveAll(dir)
	db, _ := gorm.Open(sqlite.Open(filepath.Join(dir, "app.db")), &gorm.Config{Logger: logger.Discard})
	p := am.New(am.Config{})
	_ = db.Use(p)
	_ = p.Migrate(context.Background(), db)

	mux := http.NewServeMux()
	mux.Handle("/asyncmonolith/", dashboard.New(p, dashboard.BasePath("/asyncmonolith")))
	// A dashboard for people who may look but not touch:
	mux.Handle("/queue/", dashboard.New(p, dashboard.BasePath("/queue"), dashboard.ReadOnly()))

	for _, path := range []string{"/asyncmonolith/", "/queue/poisoned"} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		fmt.Println(path, rec.Code)
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/queue/poisoned/purge", nil))
	fmt.Println("POST to the read-only one:", rec.Code)
	if s, err := db.DB(); err == nil {
		s.Close()
	}
	// Output:
	// /asyncmonolith/ 200
	// /queue/poisoned 200
	// POST to the read-only one: 403
}
