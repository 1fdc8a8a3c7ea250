package dashboard_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/dashboard"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
)

// BenchmarkDashboardPages times the dashboard's pages on PostgreSQL with a large queue
// (AM_DASHBOARD_BENCH_ROWS pending rows, default 1,000,000, over four consumers, half of
// them due; and a tenth as many poisoned). Each page is served through the handler, from
// the request to the rendered HTML. The floor is the raw keyset query of one page of 50
// rows through database/sql; x-floor says how many floors a page costs.
//
//	go test -run '^$' -bench DashboardPages -benchtime 50x ./dashboard
func BenchmarkDashboardPages(b *testing.B) {
	rows := 1_000_000
	if s := os.Getenv("AM_DASHBOARD_BENCH_ROWS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			b.Fatal(err)
		}
		rows = n
	}
	db := testdb.Open(b, "postgres")
	p := am.New(am.Config{})
	ctx := context.Background()
	if err := db.Use(p); err != nil {
		b.Fatal(err)
	}
	if err := p.Migrate(ctx, db); err != nil {
		b.Fatal(err)
	}
	now := time.Now().UnixMilli()
	start := time.Now()
	consumers := `(ARRAY['Mailer','Refunder','Indexer','Webhook'])[1 + i % 4]`
	for _, q := range []string{
		fmt.Sprintf(`INSERT INTO consumer_messages (id, created_at, available_after, attempts, consumer_type, payload_type, payload, insert_id, pending)
			SELECT lpad(i::text, 26, '0'), %d - i, %d + (CASE WHEN i %% 2 = 0 THEN -1 ELSE 1 END) * (i %% 86400000), 0, %s,
			'OrderCancelled', '{"order_id":' || i || ',"item":"teapot"}', 'order:' || i, true
			FROM generate_series(1, %d) AS i`, now, now, consumers, rows),
		fmt.Sprintf(`INSERT INTO poisoned_messages (id, created_at, available_after, attempts, consumer_type, payload_type, payload, insert_id, last_error, poisoned_at)
			SELECT 'p' || lpad(i::text, 25, '0'), %d - i, %d - i, 5, %s, 'OrderCancelled', '{"order_id":' || i || '}', 'order:' || i,
			'smtp 550: mailbox unavailable', %d - i * 1000
			FROM generate_series(1, %d) AS i`, now, now, consumers, now, rows/10),
		`ANALYZE consumer_messages`, `ANALYZE poisoned_messages`,
	} {
		if err := db.Exec(q).Error; err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("seeded %d pending and %d poisoned rows in %s", rows, rows/10, time.Since(start).Round(time.Millisecond))
	var mid am.ConsumerMessage
	if err := db.Order("available_after, created_at, id").Offset(rows / 2).Limit(1).Take(&mid).Error; err != nil {
		b.Fatal(err)
	}
	cursor := fmt.Sprintf("%d.%d.%s", mid.AvailableAfter, mid.CreatedAt, mid.ID)
	h := dashboard.New(p)
	sqlDB, _ := db.DB()

	floor := func() {
		r, err := sqlDB.QueryContext(ctx, `SELECT id, created_at, available_after, attempts, consumer_type, payload_type, payload, insert_id
			FROM consumer_messages ORDER BY available_after, created_at, id LIMIT 51`)
		if err != nil {
			b.Fatal(err)
		}
		for r.Next() {
		}
		r.Close()
	}
	for range 20 {
		floor() // warm the cache and the pool
	}
	const n = 200
	t0 := time.Now()
	for range n {
		floor()
	}
	floorNs := float64(time.Since(t0).Nanoseconds()) / n
	b.Logf("floor (raw first-page query, %d runs): %.2f ms", n, floorNs/1e6)

	for _, c := range []struct{ name, path string }{
		{"overview", "/"},
		{"overview-live", "/overview/live"},
		{"messages-first", "/messages"},
		{"messages-middle", "/messages?after=" + cursor},
		{"messages-consumer-due", "/messages?consumer=Indexer&due=yes"},
		{"messages-consumer-notdue", "/messages?consumer=Webhook&due=no&after=" + cursor},
		{"messages-insert-id", "/messages?insert_id=order:777777"},
		{"message-detail", "/messages/" + mid.ID},
		{"poisoned-first", "/poisoned"},
		{"poisoned-consumer", "/poisoned?consumer=Mailer"},
		{"schedules", "/schedules"},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, c.path, nil))
				if rec.Code != http.StatusOK {
					b.Fatalf("GET %s = %d: %s", c.path, rec.Code, rec.Body.String())
				}
			}
			per := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			b.ReportMetric(per/1e6, "ms/page")
			b.ReportMetric(per/floorNs, "x-floor")
		})
	}
}
