package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
)

// TestDemo runs the scripted demo on every database and checks what it left behind.
func TestDemo(t *testing.T) {
	t.Parallel()
	for _, dialect := range testdb.Dialects {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			db := testdb.Open(t, dialect)
			var out bytes.Buffer
			s, err := run(context.Background(), options{db: db}, &out)
			if err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			want := summary{
				Orders: 3, Cancelled: 2, Refunds: 2, EmailsSent: 1, ProductViews: 5,
				Pending: 0, Poisoned: 1, Schedules: 1,
			}
			got := s
			got.PoisonedErrors, got.ReportsPrinted = nil, 0
			if got.Orders != want.Orders || got.Cancelled != want.Cancelled || got.Refunds != want.Refunds ||
				got.EmailsSent != want.EmailsSent || got.ProductViews != want.ProductViews ||
				got.Pending != 0 || got.Poisoned != 1 || got.Schedules != 1 {
				t.Fatalf("summary = %+v, want %+v\n%s", s, want, out.String())
			}
			if s.ReportsPrinted < 1 || len(s.PoisonedErrors) != 1 || !strings.Contains(s.PoisonedErrors[0], "mail server") {
				t.Fatalf("summary = %+v\n%s", s, out.String())
			}
			for _, line := range []string{"refund of 25.00", "retry due", "moved to poisoned_messages", "schedule fired", "counted 5 views"} {
				if !strings.Contains(out.String(), line) {
					t.Errorf("the narration does not show %q:\n%s", line, out.String())
				}
			}
		})
	}
}

// TestServeMountsTheDashboard runs -serve and opens the dashboard at the address it prints.
func TestServeMountsTheDashboard(t *testing.T) {
	t.Parallel()
	db := testdb.Open(t, "sqlite")
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		_, err := run(ctx, options{db: db, serve: true, addr: "127.0.0.1:0"}, out)
		done <- err
	}()
	var url string
	testdb.Eventually(t, 20*time.Second, func() bool {
		_, rest, ok := strings.Cut(out.String(), "dashboard: open ")
		url, _, _ = strings.Cut(rest, " ")
		return ok && strings.HasSuffix(url, "/asyncmonolith/")
	}, "-serve printed no dashboard address:\n%s", out.String())
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(string(body), "<h1>Overview</h1>") {
		t.Fatalf("GET %s = %d:\n%s", url, res.StatusCode, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// syncBuffer is a bytes.Buffer safe for the demo's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
