package browsertest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/dashboard"
	"github.com/asyncmonolith/asyncmonolith/internal/testdb"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"gorm.io/gorm"
)

const hostile = `<script>alert(1)</script>`

// browserPath finds Chromium, or skips (fails under CI=true).
func browserPath(t *testing.T) string {
	t.Helper()
	path := os.Getenv("AM_CHROMIUM")
	if path == "" {
		path = "/usr/bin/chromium"
	}
	if _, err := os.Stat(path); err != nil {
		msg := fmt.Sprintf("!!! no Chromium at %s (%v): the browser tests do not run. apt-get install chromium, or set AM_CHROMIUM.", path, err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

// browser is one headless Chromium with a fresh profile; it records every JavaScript
// dialog that a page opens (and dismisses it, so the page goes on).
type browser struct {
	ctx     context.Context
	mu      sync.Mutex
	dialogs []string
	shots   string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(browserPath(t)), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 860),
		chromedp.Flag("headless", true), chromedp.Flag("no-sandbox", true), chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	ctx, cancelC := context.WithTimeout(ctx, 120*time.Second)
	t.Cleanup(func() { cancelC(); cancelB(); cancelA() })
	b := &browser{ctx: ctx, shots: os.Getenv("AM_SCREENSHOT_DIR")}
	if b.shots == "" {
		b.shots = t.ArtifactDir()
	}
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.dialogs = append(b.dialogs, string(ev.Type)+": "+ev.Message)
			b.mu.Unlock()
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		}
	}()
	return b
}

func (b *browser) do(t *testing.T, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		t.Fatalf("browser: %v", err)
	}
}

func get[T any](t *testing.T, b *browser, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(b.ctx, a)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	return v
}

// shot writes a full-page PNG screenshot named name under the screenshot directory.
func (b *browser) shot(t *testing.T, name string) string {
	t.Helper()
	png := get(t, b, chromedp.FullScreenshot(100))
	path := filepath.Join(b.shots, name+".png")
	if err := os.MkdirAll(b.shots, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s", path)
	return path
}

// text is the visible text of the first element that the CSS selector matches.
func (b *browser) text(t *testing.T, sel string) string {
	t.Helper()
	return get(t, b, chromedp.Text(chromedp.CSS(sel)))
}

func (b *browser) noDialogs(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.dialogs) > 0 {
		t.Fatalf("a page opened JavaScript dialogs: %q", b.dialogs)
	}
}

// site is the dashboard of a seeded database, served on 127.0.0.1.
type site struct {
	db  *gorm.DB
	p   *am.Plugin
	url string // the dashboard's root, with the trailing slash
}

// Consumers and payloads of the seeded queue.
type (
	OrderCancelled struct {
		OrderID int    `json:"order_id"`
		Item    string `json:"item"`
	}
	SendEmail   struct{}
	IssueRefund struct{}
)

func (SendEmail) Consume(ctx context.Context, m *am.Message[OrderCancelled]) error {
	return errors.New("smtp 550: mailbox unavailable for order " + fmt.Sprint(m.Payload.OrderID))
}

func (IssueRefund) Consume(ctx context.Context, m *am.Message[OrderCancelled]) error {
	return errors.New("payment gateway timeout")
}

// serve seeds a database of the dialect and serves its dashboard under /asyncmonolith/:
// 6 cancelled orders (so 6 poisoned messages per consumer after one failed run each),
// pending messages due now and later, a hand-written row and a poisoned row whose payload,
// insert id and error hold a script tag, and two schedules.
func serve(t *testing.T, dialect string, opts ...dashboard.Option) *site {
	t.Helper()
	db := testdb.Open(t, dialect)
	p := am.New(am.Config{MaxAttempts: 1, Logger: slog.New(slog.DiscardHandler)})
	ctx := context.Background()
	if err := errors.Join(db.Use(p), p.Migrate(ctx, db),
		am.Register[OrderCancelled](p, SendEmail{}), am.Register[OrderCancelled](p, IssueRefund{})); err != nil {
		t.Fatal(err)
	}
	items := []string{"teapot", "kettle", "cursed amulet", "mug", "toaster", "lamp"}
	for i, item := range items {
		if err := am.ProduceNow(ctx, db, OrderCancelled{OrderID: 100 + i, Item: item}, am.InsertID(fmt.Sprintf("order:%d", 100+i))); err != nil {
			t.Fatal(err)
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
	for i := range 4 {
		if err := am.ProduceNow(ctx, db, OrderCancelled{OrderID: 200 + i, Item: "later"}, am.Delay(time.Duration(i+1)*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 { // due now: they wait for a processor (none runs here)
		if err := am.ProduceNow(ctx, db, OrderCancelled{OrderID: 300 + i, Item: "now"}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UnixMilli()
	errText := hostile + " in the error text"
	if err := errors.Join(
		db.Create(&am.ConsumerMessage{ID: "hostile-pending", CreatedAt: now, AvailableAfter: now + 7_200_000, ConsumerType: "SendEmail",
			PayloadType: "OrderCancelled", Payload: `{"item":"` + hostile + `","order_id":1}`, InsertID: hostile, LastError: &errText}).Error,
		db.Create(&am.PoisonedMessage{ID: "hostile-poisoned", CreatedAt: now - 60_000, AvailableAfter: now - 60_000, Attempts: 1,
			ConsumerType: "SendEmail", PayloadType: "OrderCancelled", Payload: `{"item":"` + hostile + `"}`, InsertID: "x" + hostile,
			LastError: errText, PoisonedAt: now - 30_000}).Error,
	); err != nil {
		t.Fatal(err)
	}
	if _, err := am.Schedule(t.Context(), db, OrderCancelled{Item: "nightly"}, "0 2 * * *", am.InZone("Europe/Paris"), am.Tag("reports")); err != nil {
		t.Fatal(err)
	}
	if _, err := am.Schedule(t.Context(), db, OrderCancelled{Item: "hourly"}, "@hourly", am.Tag(hostile)); err != nil {
		t.Fatal(err)
	}
	return &site{db: db, p: p, url: listen(t, "127.0.0.1", dashboard.New(p, append([]dashboard.Option{dashboard.BasePath("/asyncmonolith")}, opts...)...))}
}

// listen serves h under /asyncmonolith/ on host and returns the dashboard's URL.
func listen(t *testing.T, host string, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/asyncmonolith/", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String() + "/asyncmonolith/"
}

func (s *site) count(t *testing.T, model any, where string, args ...any) int64 {
	t.Helper()
	var n int64
	q := s.db.Model(model)
	if where != "" {
		q = q.Where(where, args...)
	}
	if err := q.Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}
