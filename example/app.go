package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync/atomic"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/dashboard"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Domain tables.

// Order is an order placed through the API.
type Order struct {
	ID     uint   `gorm:"primaryKey" json:"id"`
	Item   string `gorm:"size:100" json:"item"`
	Cents  int64  `json:"cents"`
	Status string `gorm:"size:20" json:"status"`
}

// Refund is written by the IssueRefund consumer through Message.Tx.
type Refund struct {
	OrderID uint `gorm:"primaryKey"`
	Cents   int64
}

// PageView is one raw view of a product page.
type PageView struct {
	ID        uint   `gorm:"primaryKey"`
	ProductID string `gorm:"size:64;index"`
}

// ProductStats is the aggregate the AggregateViews consumer maintains.
type ProductStats struct {
	ProductID string `gorm:"primaryKey;size:64"`
	Views     int64
}

// Messages.

// OrderCancelled is produced in the same transaction that cancels an order.
type OrderCancelled struct {
	OrderID uint   `json:"order_id"`
	Item    string `json:"item"`
	Cents   int64  `json:"cents"`
}

// AggregateViews asks for a product's views to be counted; deduplicated per product and
// delayed, so a burst of views costs one aggregation.
type AggregateViews struct {
	ProductID string `json:"product_id"`
}

// SalesReport is produced by a cron schedule.
type SalesReport struct {
	Title string `json:"title"`
}

// app holds the service's dependencies.
type app struct {
	db       *gorm.DB
	say      func(format string, args ...any)
	emails   atomic.Int64
	reports  atomic.Int64
	failItem string // the e-mail to this item's buyer fails on purpose
}

// Consumers.

// SendCancellationEmail "sends" an e-mail (it logs it). It fails for one item on purpose.
type SendCancellationEmail struct{ app *app }

// Consume sends the e-mail.
func (c SendCancellationEmail) Consume(ctx context.Context, m *am.Message[OrderCancelled]) error {
	if m.Payload.Item == c.app.failItem {
		c.app.say("✉️  email for order %d failed (attempt %d of %d): mail server rejected the address", m.Payload.OrderID, m.Attempt, m.MaxAttempts)
		return errors.New("mail server rejected the address")
	}
	c.app.emails.Add(1)
	c.app.say("✉️  email sent: order %d (%s) is cancelled", m.Payload.OrderID, m.Payload.Item)
	return nil
}

// IssueRefund writes the refund in the transaction that completes the message, so the
// refund exists exactly once.
type IssueRefund struct{ app *app }

// Consume writes the refund.
func (c IssueRefund) Consume(ctx context.Context, m *am.Message[OrderCancelled]) error {
	r := Refund{OrderID: m.Payload.OrderID, Cents: m.Payload.Cents}
	if err := m.Tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&r).Error; err != nil {
		return err
	}
	c.app.say("💸 refund of %d.%02d written for order %d (in the message's transaction)", r.Cents/100, r.Cents%100, r.OrderID)
	return nil
}

// AggregateViews counts a product's raw views into product_stats.
type AggregateViewsConsumer struct{ app *app }

// ConsumerType keeps the stored name stable whatever the Go type is called.
func (AggregateViewsConsumer) ConsumerType() string { return "AggregateViews" }

// Consume aggregates.
func (c AggregateViewsConsumer) Consume(ctx context.Context, m *am.Message[AggregateViews]) error {
	var n int64
	if err := m.Tx.Model(&PageView{}).Where("product_id = ?", m.Payload.ProductID).Count(&n).Error; err != nil {
		return err
	}
	stats := ProductStats{ProductID: m.Payload.ProductID, Views: n}
	if err := m.Tx.Clauses(clause.OnConflict{UpdateAll: true}).Create(&stats).Error; err != nil {
		return err
	}
	c.app.say("📊 one aggregation counted %d views of %s (deduplicated, delayed message)", n, m.Payload.ProductID)
	return nil
}

// PrintReport handles the scheduled report.
type PrintReport struct{ app *app }

// Consume prints the report.
func (c PrintReport) Consume(ctx context.Context, m *am.Message[SalesReport]) error {
	var orders, cancelled int64
	m.Tx.Model(&Order{}).Count(&orders)
	m.Tx.Model(&Order{}).Where("status = ?", "cancelled").Count(&cancelled)
	c.app.reports.Add(1)
	c.app.say("🗓️  %s (schedule fired): %d orders, %d cancelled", m.Payload.Title, orders, cancelled)
	return nil
}

// register binds the consumers.
func (a *app) register(p *am.Plugin) error {
	return errors.Join(
		am.Register[OrderCancelled](p, SendCancellationEmail{a}, am.WithAttempts(2)),
		am.Register[OrderCancelled](p, IssueRefund{a}),
		am.Register[AggregateViews](p, AggregateViewsConsumer{a}),
		am.Register[SalesReport](p, PrintReport{a}, am.WithTimeout(5*time.Second)),
	)
}

// HTTP API.

// routes serves the API and, under /asyncmonolith/, the queue's dashboard (in a real
// application, behind its admin authentication).
func (a *app) routes(p *am.Plugin) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/asyncmonolith/", dashboard.New(p, dashboard.BasePath("/asyncmonolith")))
	mux.HandleFunc("POST /orders", a.placeOrder)
	mux.HandleFunc("POST /orders/{id}/cancel", a.cancelOrder)
	mux.HandleFunc("GET /products/{id}", a.viewProduct)
	mux.HandleFunc("GET /stats", a.stats)
	return mux
}

func (a *app) placeOrder(w http.ResponseWriter, r *http.Request) {
	var o Order
	if err := json.NewDecoder(r.Body).Decode(&o); err != nil || o.Item == "" {
		http.Error(w, "want {\"item\": \"…\", \"cents\": N}", http.StatusBadRequest)
		return
	}
	o.ID, o.Status = 0, "placed"
	if err := a.db.WithContext(r.Context()).Create(&o).Error; err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusCreated, o)
}

// cancelOrder changes the order and produces OrderCancelled in one transaction: both
// commit or neither does.
func (a *app) cancelOrder(w http.ResponseWriter, r *http.Request) {
	var o Order
	err := a.db.WithContext(r.Context()).Transaction(func(tx *gorm.DB) error {
		if err := tx.Where("id = ?", r.PathValue("id")).Take(&o).Error; err != nil {
			return err
		}
		if o.Status == "cancelled" {
			return errAlreadyCancelled
		}
		if err := tx.Model(&o).Update("status", "cancelled").Error; err != nil {
			return err
		}
		return am.Produce(tx, OrderCancelled{OrderID: o.ID, Item: o.Item, Cents: o.Cents}).Error
	})
	switch {
	case errors.Is(err, gorm.ErrRecordNotFound):
		http.Error(w, "no such order", http.StatusNotFound)
	case errors.Is(err, errAlreadyCancelled):
		http.Error(w, err.Error(), http.StatusConflict)
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	default:
		writeJSON(w, http.StatusOK, o)
	}
}

var errAlreadyCancelled = errors.New("order already cancelled")

// viewProduct records a view, with a deduplicated, delayed aggregation: the message is
// buffered on the session and written by the Create, in its transaction.
func (a *app) viewProduct(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s := am.Produce(a.db.WithContext(r.Context()), AggregateViews{ProductID: id},
		am.InsertID("views:"+id), am.Delay(1500*time.Millisecond))
	if err := s.Create(&PageView{ProductID: id}).Error; err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"product": id})
}

func (a *app) stats(w http.ResponseWriter, r *http.Request) {
	var stats []ProductStats
	if err := a.db.WithContext(r.Context()).Find(&stats).Error; err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, stats)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Tables the demo owns, dropped before a run on a shared database.
var demoTables = []any{&Order{}, &Refund{}, &PageView{}, &ProductStats{}}
