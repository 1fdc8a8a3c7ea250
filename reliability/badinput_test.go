package reliability_test

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
)

type Blob struct {
	Data string `json:"data"`
}

func testLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestHostileInput: sizes, encodings and SQL metacharacters round-trip unchanged (every
// value is bound as a parameter), over-long names fail with ErrInvalidName, and
// hand-written rows with odd attempts or due times are handled.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	for _, dialect := range testdb.Dialects {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			db := testdb.Open(t, dialect)
			p := am.New(am.Config{MaxAttempts: 2, Logger: testLogger()})
			if err := db.Use(p); err != nil {
				t.Fatal(err)
			}
			if err := p.Migrate(context.Background(), db); err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			var mu sync.Mutex // consumers run concurrently
			if err := am.Register[Blob](p, am.ConsumerFunc[Blob](func(ctx context.Context, m *am.Message[Blob]) error {
				mu.Lock()
				defer mu.Unlock()
				got[m.InsertID] = m.Payload.Data
				return nil
			}), am.WithName("Blobs")); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			meta := `'; DROP TABLE consumer_messages; --"` + "`\\"
			cases := map[string]string{
				"one-byte":         "x",
				"five-megabytes":   strings.Repeat("0123456789abcdef", 5<<20/16),
				"unicode":          "Zürich 東京 🚀 \u202e RTL",
				"control":          "\x01\x02\t\n\r\x7f",
				meta:               meta,
				"quote's \"double": "O'Brien \"quoted\"",
			}
			for id, data := range cases {
				if err := am.ProduceNow(ctx, db, Blob{Data: data}, am.InsertID(id)); err != nil {
					t.Fatalf("%q: %v", id, err)
				}
			}
			for {
				n, err := p.ProcessBatch(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					break
				}
			}
			for id, data := range cases {
				if got[id] != data {
					t.Fatalf("%.20q: payload changed in the round trip (%d bytes in, %d out)", id, len(data), len(got[id]))
				}
			}
			if !db.Migrator().HasTable("consumer_messages") {
				t.Fatal("SQL in an insert id was executed")
			}
			long := strings.Repeat("n", 10*1024)
			if err := am.ProduceNow(ctx, db, Blob{}, am.InsertID(long)); !errors.Is(err, am.ErrInvalidName) {
				t.Fatalf("10 KB insert id: %v", err)
			}
			if _, err := am.Schedule(t.Context(), db, Blob{}, "@daily", am.Tag(long)); !errors.Is(err, am.ErrInvalidName) {
				t.Fatalf("10 KB tag: %v", err)
			}
			if err := am.Register[Blob](p, am.ConsumerFunc[Blob](nil), am.WithName(long)); !errors.Is(err, am.ErrInvalidName) {
				t.Fatalf("10 KB consumer name: %v", err)
			}

			// Hand-written rows: negative attempts, a due time in the far past and far future.
			now := time.Now().UnixMilli()
			rows := []am.ConsumerMessage{
				{ID: "negative", CreatedAt: now, AvailableAfter: now, Attempts: -7, ConsumerType: "Blobs", PayloadType: "Blob", Payload: `{"data":"neg"}`, InsertID: "neg"},
				{ID: "past", CreatedAt: now, AvailableAfter: math.MinInt64 / 2, ConsumerType: "Blobs", PayloadType: "Blob", Payload: `{"data":"past"}`, InsertID: "past"},
				{ID: "future", CreatedAt: now, AvailableAfter: math.MaxInt64 / 2, ConsumerType: "Blobs", PayloadType: "Blob", Payload: `{"data":"future"}`, InsertID: "future"},
			}
			if err := db.Create(&rows).Error; err != nil {
				t.Fatal(err)
			}
			if _, err := p.ProcessBatch(ctx); err != nil {
				t.Fatal(err)
			}
			if got["neg"] != "neg" || got["past"] != "past" || got["future"] != "" {
				t.Fatalf("hand-written rows: %v", map[string]string{"neg": got["neg"], "past": got["past"], "future": got["future"]})
			}
			var left []string
			db.Model(&am.ConsumerMessage{}).Pluck("id", &left)
			if len(left) != 1 || left[0] != "future" {
				t.Fatalf("left in the queue: %v, want [future]", left)
			}
		})
	}
}
