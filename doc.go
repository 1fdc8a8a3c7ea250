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
// a message on success, retry it after Config.AttemptDelay (or a RetryPolicy) on failure,
// and move it to poisoned_messages after its last attempt:
//
//	err := p.Start(ctx)
//	defer p.Stop(shutdownCtx)
//
// A consumer that keeps failing (Config.BreakerFailures runs in a row) is paused instead of
// drained into poison: its due messages are set aside, without counting an attempt, until a
// probe run succeeds (see Plugin.Paused, Plugin.Counters, Config.DisableBreaker).
//
// A consumer steers its message by the error it returns: Permanent(err) poisons it at
// once with its reason; SnoozeFor and SnoozeUntil run it again later without using an
// attempt (bounded by Config.MaxSnoozes). Per consumer, WithRetryPolicy chooses the delay
// before each retry (ExponentialBackoff, FixedDelay, RetryPolicyFunc), WithConcurrency bounds
// its concurrent runs (1: one at a time, in due order), and WithRail puts it on a rail of
// its own (Config.Rails: processors of its own), so that a slow consumer cannot hold up the
// others.
//
// Tests control time with Config.Clock (asyncmonolithtest.NewClock): due times, consumer
// timeouts and AbandonGrace follow it.
//
// Recurring messages: Schedule, Reschedule, DeleteSchedule and DeleteSchedulesByTag write
// (in the caller's transaction when given one); Plugin.GetSchedule, ListSchedules and
// PageSchedules read.
//
// Operating the queue: Stats, PageMessages, PagePoisoned, RequeuePoisoned, PurgePoisoned and
// their kin; package dashboard puts a web page on them, and cmd/asyncmonolith a CLI.
//
// Delivery is at least once; database writes made through Message.Tx happen exactly once.
// See docs/guarantees.md and docs/settings.md in the repository for the guarantees, the
// settings and the limits of each database.
package asyncmonolith
