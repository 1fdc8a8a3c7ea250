package main

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// floor does the same work as the library with plain database/sql and the least overhead:
// the baseline our figures are compared with.
type floor struct {
	db      *sql.DB
	dialect string
	seq     atomic.Int64
	// set by consume: this process's CPU time per message
	cpuPerMsg time.Duration
}

func (f *floor) ph(i int) string {
	if f.dialect == "postgres" {
		return fmt.Sprintf("$%d", i)
	}
	return "?"
}

// produce inserts total rows, perTx per transaction, as one multi-VALUES INSERT.
func (f *floor) produce(total, perTx int) (float64, error) {
	clear := "TRUNCATE TABLE consumer_messages"
	if f.dialect == "sqlite" {
		clear = "DELETE FROM consumer_messages"
	}
	if _, err := f.db.Exec(clear); err != nil {
		return 0, err
	}
	var b strings.Builder
	b.WriteString("INSERT INTO consumer_messages (id, created_at, available_after, attempts, consumer_type, payload_type, payload, insert_id) VALUES ")
	for i := range perTx {
		if i > 0 {
			b.WriteByte(',')
		}
		k := i*5 + 1
		fmt.Fprintf(&b, "(%s,%s,%s,0,'Noop','Tick',%s,%s)", f.ph(k), f.ph(k+1), f.ph(k+2), f.ph(k+3), f.ph(k+4))
	}
	stmt := b.String()
	args := make([]any, 0, perTx*5)
	start := time.Now()
	for done := 0; done < total; done += perTx {
		args = args[:0]
		now := time.Now().UnixMilli()
		for range perTx {
			id := fmt.Sprintf("f%025d", f.seq.Add(1))
			args = append(args, id, now, now, `{"n":0,"sent":0}`, id)
		}
		tx, err := f.db.Begin()
		if err != nil {
			return 0, err
		}
		if _, err := tx.Exec(stmt, args...); err != nil {
			tx.Rollback()
			return 0, err
		}
		if err := tx.Commit(); err != nil {
			return 0, err
		}
	}
	return float64(total) / time.Since(start).Seconds(), nil
}

// consume burns down everything due with `workers` goroutines, each running
// BEGIN; SELECT … LIMIT batch FOR UPDATE SKIP LOCKED; DELETE … IN (…); COMMIT.
func (f *floor) consume(workers, batch int) (float64, error) {
	var total int64
	if err := f.db.QueryRow("SELECT COUNT(*) FROM consumer_messages").Scan(&total); err != nil {
		return 0, err
	}
	lock := " FOR UPDATE SKIP LOCKED"
	var opts *sql.TxOptions
	switch f.dialect {
	case "sqlite":
		lock = ""
	case "mysql":
		opts = &sql.TxOptions{Isolation: sql.LevelReadCommitted}
	}
	// rail = '': the default rail's range of the fetch index, as the plugin's claim reads it.
	sel := fmt.Sprintf("SELECT id, created_at, available_after, attempts, consumer_type, payload_type, payload, insert_id FROM consumer_messages WHERE rail = '' AND available_after <= %s ORDER BY available_after, created_at, id LIMIT %d%s", f.ph(1), batch, lock)
	var done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	cpu0 := cpuTime()
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done.Load() < total {
				n, err := f.consumeBatch(context.Background(), opts, sel)
				if err != nil {
					if strings.Contains(err.Error(), "1213") || strings.Contains(err.Error(), "1205") {
						continue // deadlock: retry at once
					}
					errs <- err
					return
				}
				done.Add(int64(n))
				if n == 0 && done.Load() < total {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	rate := float64(total) / time.Since(start).Seconds()
	if total > 0 {
		f.cpuPerMsg = (cpuTime() - cpu0) / time.Duration(total)
	}
	return rate, nil
}

func (f *floor) consumeBatch(ctx context.Context, opts *sql.TxOptions, sel string) (int, error) {
	tx, err := f.db.BeginTx(ctx, opts)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	rows, err := tx.Query(sel, time.Now().UnixMilli())
	if err != nil {
		return 0, err
	}
	var ids []any
	for rows.Next() {
		var id, ct, pt, payload, ins string
		var created, due int64
		var attempts int
		if err := rows.Scan(&id, &created, &due, &attempts, &ct, &pt, &payload, &ins); err != nil {
			rows.Close()
			return 0, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, nil
	}
	if _, err := tx.Exec(f.deleteIn(len(ids)), ids...); err != nil {
		return 0, err
	}
	return len(ids), tx.Commit()
}

// consumeWaiting burns down everything due the way a lease-based runtime would at best,
// with consumers that wait: one claimer marks up to `batch` due rows as taken (moves them
// a minute ahead, in one autocommit statement; MySQL: SELECT … FOR UPDATE SKIP LOCKED and
// UPDATE in one transaction) for as many free slots as `concurrency` leaves, each claimed
// row waits `wait` on a goroutine of its own, and one completer deletes the finished rows,
// up to 100 per statement. It is the yardstick for waiting consumers: what this database
// allows for that shape with no library around it.
func (f *floor) consumeWaiting(concurrency, batch int, wait time.Duration) (float64, error) {
	var total int64
	if err := f.db.QueryRow("SELECT COUNT(*) FROM consumer_messages").Scan(&total); err != nil {
		return 0, err
	}
	slots := make(chan struct{}, concurrency)
	finished := make(chan string, concurrency)
	completerErr := make(chan error, 1)
	var done atomic.Int64
	start := time.Now()
	go func() { completerErr <- f.completeWaiting(finished, total, &done) }()
	for done.Load() < total {
		select {
		case err := <-completerErr:
			return 0, err
		default:
		}
		// Take at least one free slot (waiting for it), then as many more as are free.
		slots <- struct{}{}
		k := 1
		for k < batch {
			select {
			case slots <- struct{}{}:
				k++
				continue
			default:
			}
			break
		}
		ids, err := f.claim(k)
		if err != nil {
			return 0, err
		}
		for range k - len(ids) {
			<-slots
		}
		if len(ids) == 0 {
			time.Sleep(time.Millisecond)
			continue
		}
		for _, id := range ids {
			go func() {
				time.Sleep(wait)
				finished <- id
				<-slots
			}()
		}
	}
	return float64(total) / time.Since(start).Seconds(), nil
}

// claim takes up to k due rows for a minute and returns their ids.
func (f *floor) claim(k int) ([]string, error) {
	now := time.Now().UnixMilli()
	pick := fmt.Sprintf("SELECT id FROM consumer_messages WHERE rail = '' AND available_after <= %s ORDER BY available_after, created_at, id LIMIT %d", f.ph(2), k)
	var ids []string
	scan := func(rows *sql.Rows, err error) error {
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return rows.Err()
	}
	switch f.dialect {
	case "mysql":
		tx, err := f.db.BeginTx(context.Background(), &sql.TxOptions{Isolation: sql.LevelReadCommitted})
		if err != nil {
			return nil, err
		}
		defer tx.Rollback()
		if err := scan(tx.Query(pick+" FOR UPDATE SKIP LOCKED", now)); err != nil {
			return nil, err
		}
		if len(ids) == 0 {
			return nil, tx.Commit()
		}
		args := []any{now + 60_000}
		for _, id := range ids {
			args = append(args, id)
		}
		if _, err := tx.Exec("UPDATE consumer_messages SET available_after = ? WHERE id IN (?"+strings.Repeat(",?", len(ids)-1)+")", args...); err != nil {
			return nil, err
		}
		return ids, tx.Commit()
	case "postgres":
		pick += " FOR UPDATE SKIP LOCKED"
	}
	err := scan(f.db.Query(fmt.Sprintf("UPDATE consumer_messages SET available_after = %s WHERE id IN (%s) RETURNING id", f.ph(1), pick), now+60_000, now))
	return ids, err
}

// completeWaiting deletes finished rows, up to 100 per statement, until total are done.
func (f *floor) completeWaiting(finished <-chan string, total int64, done *atomic.Int64) error {
	var ids []any
	for done.Load() < total {
		ids = append(ids[:0], <-finished)
	more:
		for len(ids) < 100 {
			select {
			case id := <-finished:
				ids = append(ids, id)
			default:
				break more
			}
		}
		if _, err := f.db.Exec(f.deleteIn(len(ids)), ids...); err != nil {
			return err
		}
		done.Add(int64(len(ids)))
	}
	return nil
}

// deleteIn is a DELETE of n rows by id.
func (f *floor) deleteIn(n int) string {
	var b strings.Builder
	b.WriteString("DELETE FROM consumer_messages WHERE id IN (")
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(f.ph(i + 1))
	}
	b.WriteByte(')')
	return b.String()
}
