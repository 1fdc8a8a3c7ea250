package asyncmonolith_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

// Schedule produces a payload on a cron expression, in a time zone.
func ExampleSchedule() {
	db, p, done := exampleDB()
	defer done()
	ctx := context.Background()
	_ = am.Register[PaymentFailed](p, NotifyCustomer{})

	id, err := am.Schedule(ctx, db, PaymentFailed{PaymentID: "weekly-check"}, "0 0 12 * * MON",
		am.InZone("Europe/London"), am.Tag("checks"))
	fmt.Println(err, len(id))
	list, _ := p.ListSchedules(ctx, "checks")
	fmt.Println(len(list), list[0].ChronExpression, list[0].ChronTimezone)
	n, _ := am.DeleteSchedulesByTag(ctx, db, "checks")
	fmt.Println("deleted", n)
	// Output:
	// <nil> 26
	// 1 0 0 12 * * MON Europe/London
	// deleted 1
}

// ParseCron checks an expression and shows its next occurrence.
func ExampleParseCron() {
	from := time.Date(2026, 3, 28, 12, 0, 0, 0, time.UTC)
	next, err := am.ParseCron("30 1 * * *", "Europe/London", from)
	fmt.Println(next, err)
	_, err = am.ParseCron("every day", "UTC", from)
	fmt.Println(err)
	// Output:
	// 2026-03-30 01:30:00 +0100 BST <nil>
	// asyncmonolith: invalid schedule: "every day" has 2 fields, want 5 (minute hour day month weekday), 6 (with seconds first) or a descriptor such as @daily
}

// Reschedule changes a schedule's expression, zone, tag or payload.
func ExampleReschedule() {
	db, p, done := exampleDB()
	defer done()
	ctx := context.Background()
	_ = am.Register[PaymentFailed](p, NotifyCustomer{})

	id, _ := am.Schedule(ctx, db, PaymentFailed{PaymentID: "x"}, "@daily")
	err := am.Reschedule(ctx, db, id, "0 9 * * MON-FRI", am.InZone("America/New_York"), am.Tag("weekdays"))
	s, _ := p.GetSchedule(ctx, id)
	fmt.Println(err, s.ChronExpression, s.ChronTimezone, *s.Tag)
	// Output: <nil> 0 9 * * MON-FRI America/New_York weekdays
}

// DeleteSchedule removes one schedule by id.
func ExampleDeleteSchedule() {
	db, p, done := exampleDB()
	defer done()
	ctx := context.Background()
	_ = am.Register[PaymentFailed](p, NotifyCustomer{})

	id, _ := am.Schedule(ctx, db, PaymentFailed{PaymentID: "x"}, "@hourly")
	fmt.Println(am.DeleteSchedule(ctx, db, id))
	err := am.DeleteSchedule(ctx, db, id)
	fmt.Println(errors.Is(err, am.ErrScheduleNotFound))
	// Output:
	// <nil>
	// true
}

// PageSchedules pages schedules as PageMessages pages messages: a ScheduleFilter (tag,
// page size) and the previous page's Next as cursor.
func ExamplePlugin_PageSchedules() {
	db, p, done := exampleDB()
	defer done()
	ctx := context.Background()
	_ = am.Register[PaymentFailed](p, NotifyCustomer{})
	for _, expr := range []string{"@hourly", "@daily", "@weekly"} {
		_, _ = am.Schedule(ctx, db, PaymentFailed{PaymentID: "check"}, expr, am.Tag("checks"))
	}
	page, _ := p.PageSchedules(ctx, am.ScheduleFilter{Tag: "checks", Limit: 2}, "")
	fmt.Println(len(page.Rows), page.Rows[0].ChronExpression)
	page, _ = p.PageSchedules(ctx, am.ScheduleFilter{Tag: "checks", Limit: 2}, page.Next)
	fmt.Println(len(page.Rows), page.Rows[0].ChronExpression, page.Next == "")
	// Output:
	// 2 @hourly
	// 1 @weekly true
}

// Schedule on a transaction writes the schedule with the domain change: both commit, or
// neither does.
func ExampleSchedule_transaction() {
	db, p, done := exampleDB()
	defer done()
	ctx := context.Background()
	_ = am.Register[PaymentFailed](p, NotifyCustomer{})

	_ = db.AutoMigrate(&Payment{})
	err := db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(&Payment{ID: "p9", Status: "retrying"}).Error; err != nil {
			return err
		}
		_, err := am.Schedule(ctx, tx, PaymentFailed{PaymentID: "p9"}, "@hourly", am.Tag("payment:p9"))
		if err != nil {
			return err
		}
		return errors.New("card service refused") // rolls back the payment and its schedule
	})
	list, _ := p.ListSchedules(ctx, "payment:p9")
	fmt.Println(err, len(list))
	// Output: card service refused 0
}

// GetSchedule reads one schedule through the plugin, with its next run as a time.
func ExamplePlugin_GetSchedule() {
	db, p, done := exampleDB()
	defer done()
	ctx := context.Background()
	_ = am.Register[PaymentFailed](p, NotifyCustomer{})

	id, _ := am.Schedule(ctx, db, PaymentFailed{PaymentID: "x"}, "0 0 9 * * *", am.InZone("Asia/Tokyo"))
	s, _ := p.GetSchedule(ctx, id)
	fmt.Println(s.ChronExpression, s.ChronTimezone, s.NextRun.In(time.UTC).Format("15:04 MST"))
	_, err := p.GetSchedule(ctx, "no-such-id")
	fmt.Println(errors.Is(err, am.ErrScheduleNotFound))
	// Output:
	// 0 0 9 * * * Asia/Tokyo 00:00 UTC
	// true
}
