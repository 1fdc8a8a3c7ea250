// Package asyncmonolith is a GORM plugin for durable, asynchronous messaging inside the
// application's own database: a transactional outbox, typed consumers, retries, poisoned
// messages and cron schedules, on PostgreSQL, MySQL/MariaDB and SQLite, with no broker.
//
// Register the plugin once, create its tables, and register consumers:
//
//	p := asyncmonolith.New(asyncmonolith.Config{})
//	if err := db.Use(p); err != nil { … }
//	if err := p.Migrate(ctx, db); err != nil { … }      // or the SQL in the migrations package
//	err := asyncmonolith.Register[OrderCancelled](p, SendEmail{}, asyncmonolith.WithAttempts(3))
//
// Produce messages with your domain change, in one transaction:
//
//	err := db.Transaction(func(tx *gorm.DB) error {
//		if err := tx.Model(&order).Update("status", "cancelled").Error; err != nil {
//			return err
//		}
//		return asyncmonolith.Produce(tx, OrderCancelled{OrderID: order.ID}).Error
//	})
//
// or buffered on a session and written by its next write, in that write's transaction:
//
//	err := asyncmonolith.Produce(db, OrderCancelled{OrderID: id}).Save(&order).Error
//
// Start the processors; they claim due messages for a lease (FOR UPDATE SKIP LOCKED, in a
// short transaction), run up to Config.ConsumerConcurrency consumers at once — each with
// Message.Tx, a transaction of its own that commits with the message's completion — delete
// a message on success, retry it after Config.AttemptDelay on failure, and move it to
// poisoned_messages after its last attempt:
//
//	err := p.Start(ctx)
//	defer p.Stop(shutdownCtx)
//
// A consumer that keeps failing (Config.BreakerFailures runs in a row) is paused instead of
// drained into poison: its due messages are set aside, without counting an attempt, until a
// probe run succeeds (see Plugin.Paused, Plugin.Counters, Config.DisableBreaker).
//
// Recurring messages: Schedule, Reschedule, DeleteSchedule, DeleteSchedulesByTag.
//
// Operating the queue: Stats, PageMessages, PagePoisoned, RequeuePoisoned, PurgePoisoned and
// their kin; package dashboard puts a web page on them, and cmd/asyncmonolith a CLI.
//
// Delivery is at least once; database writes made through Message.Tx happen exactly once.
// See docs/guarantees.md and docs/settings.md in the repository for the guarantees, the
// settings and the limits of each database.
package asyncmonolith
