package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"sort"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

// The sections of consumers that do real work: they wait (a network call that touches no
// database), write through Message.Tx, fail once, straggle; an application writes while
// they wait; and the connections they hold. Ours runs with the default Config (the bench
// sets only a silent Logger and its AfterConsume hook) unless a row says otherwise.

const riverWorkers = 100

// waitJobs is n jobs that wait ms milliseconds each.
func waitJobs(n, ms int) []Job {
	jobs := make([]Job, n)
	for i := range jobs {
		jobs[i] = Job{N: i, WaitMs: ms}
	}
	return jobs
}

// spec is one workload: the jobs, ours' Config, whether the first job is a straggler (not
// counted with the fast ones), and a cap on ours' pool (sql.DB SetMaxOpenConns; 0: none).
type spec struct {
	cfg       am.Config
	jobs      []Job
	straggler bool
	maxOpen   int
}

// oursWork burns s.jobs down once on a fresh plugin and returns the fast messages' rate,
// what differed from a correct run, the most consumers seen running at once, and the
// longest time between two completions of fast messages (a stall shows there).
func oursWork(c config, schema string, s spec) (rate float64, bad string, peak int64, gap time.Duration, err error) {
	jobs, straggler := s.jobs, s.straggler
	db, err := openGorm(c, schema)
	if err != nil {
		return 0, "", 0, 0, err
	}
	if s.maxOpen > 0 {
		if sqlDB, err := db.DB(); err == nil {
			sqlDB.SetMaxOpenConns(s.maxOpen)
		}
	}
	w, err := newWorkload(c, db, s.cfg)
	if err != nil {
		return 0, "", 0, 0, err
	}
	defer w.close()
	if err := w.fillJobs(jobs); err != nil {
		return 0, "", 0, 0, err
	}
	fast := len(jobs)
	if straggler {
		fast--
	}
	el, err := w.burnDown(fast, len(jobs))
	if err != nil {
		return 0, "", 0, 0, err
	}
	w.mu.Lock()
	gap, gapAt := w.maxGap, w.gapAt
	w.mu.Unlock()
	if gap > 100*time.Millisecond {
		fmt.Fprintf(os.Stderr, "  a gap of %.0f ms between completions, ending at the %dth of %d\n", float64(gap.Microseconds())/1000, gapAt, len(jobs))
	}
	return float64(fast) / el.Seconds(), w.check(jobs), w.peak.Load(), gap, nil
}

// pair is one figure measured for ours and (PostgreSQL) River, run after run, alternating
// which goes first.
type pair struct {
	ours, river       []float64
	oursBad, riverBad checks
	peak              int64
	gap               time.Duration // ours' longest time between two completions, over the runs
}

func comparePair(c config, schema, riverSchema string, s spec) (*pair, error) {
	p := &pair{}
	for run := range c.runs {
		riverFirst := run%2 == 1
		for side := range 2 {
			if (side == 0) != riverFirst {
				var x float64
				var bad string
				var peak int64
				var gap time.Duration
				err := retryTooMany(func() (err error) {
					x, bad, peak, gap, err = oursWork(c, schema, s)
					return err
				})
				if err != nil {
					return nil, err
				}
				p.ours = append(p.ours, x)
				p.oursBad.add(run, bad)
				p.peak = max(p.peak, peak)
				p.gap = max(p.gap, gap)
			} else if riverSchema != "" {
				var x float64
				var bad string
				err := retryTooMany(func() (err error) {
					x, bad, err = riverRun(c, riverSchema, riverWorkers, s.jobs, s.straggler)
					return err
				})
				if err != nil {
					return nil, err
				}
				p.river = append(p.river, x)
				p.riverBad.add(run, bad)
			}
		}
	}
	return p, nil
}

// ratioStat is a ÷ b as min÷max, median÷median, max÷min.
func ratioStat(a, b stat) stat { return stat{a.min / b.max, a.med / b.med, a.max / b.min} }

// addPair prints ours, River and ours ÷ River for one workload.
func addPair(r *report, label string, p *pair, oursNote, target string) (stat, stat) {
	o := statOf(p.ours)
	r.add("asyncmonolith: "+label, o, fmt.Sprintf("%s; at most %d consumer(s) at once; longest gap between completions %.0f ms; %s",
		oursNote, p.peak, float64(p.gap.Microseconds())/1000, p.oursBad.note()))
	if len(p.river) == 0 {
		return o, stat{}
	}
	rv := statOf(p.river)
	r.add(fmt.Sprintf("River %d workers: %s", riverWorkers, label), rv, p.riverBad.note())
	pr := pairedRatios(p.ours, p.river)
	r.add("  asyncmonolith ÷ River", ratioStat(o, rv), fmt.Sprintf("ratio (min÷max–max÷min); run by run %.2f× (%.2f–%.2f)%s", pr.med, pr.min, pr.max, target))
	return o, rv
}

// riverSchemaFor makes River's schema on PostgreSQL ("" elsewhere: River has no driver
// for the others here).
func riverSchemaFor(c config) (string, func(), error) {
	if c.dialect != "postgres" {
		return "", func() {}, nil
	}
	return newSchema(c, "river_")
}

// runWaiting: consumers that wait 10 ms and 50 ms and touch no database.
func runWaiting(c config, schema string, r *report) error {
	rs, drop, err := riverSchemaFor(c)
	if err != nil {
		return err
	}
	defer drop()
	waits := []int{10, 50}
	if c.quick {
		waits = waits[:1]
	}
	concurrency := am.ConsumerConcurrencyDefault * am.ConsumerProcessorsDefault
	raw, err := openRaw(c, schema)
	if err != nil {
		return err
	}
	defer raw.Close()
	fl := &floor{db: raw, dialect: c.dialect}
	r.section(fmt.Sprintf("waiting consumers: burn-down of %d messages whose consumer waits and touches no database (messages/s); ours with default Config (%d processor, %d consumers at once)",
		c.waitN, am.ConsumerProcessorsDefault, concurrency))
	for _, ms := range waits {
		p, err := comparePair(c, schema, rs, spec{jobs: waitJobs(c.waitN, ms)})
		if err != nil {
			return err
		}
		label := fmt.Sprintf("wait %d ms", ms)
		o, _ := addPair(r, label, p, "defaults", "; target ≥ 1.5×")
		f, err := measure(c.runs, func() (float64, error) {
			if err := fillRaw(c, schema, c.waitN); err != nil {
				return 0, err
			}
			return fl.consumeWaiting(concurrency, am.ProcessorBatchSizeDefault, time.Duration(ms)*time.Millisecond)
		})
		if err != nil {
			return err
		}
		r.add(fmt.Sprintf("  raw lease floor: %d at once, claims of ≤ %d, %d ms wait", concurrency, am.ProcessorBatchSizeDefault, ms), f,
			fmt.Sprintf("asyncmonolith at %.3g× of it", o.med/f.med))
		ceiling := float64(concurrency) / (float64(ms) / 1000)
		r.add(fmt.Sprintf("  target 0.8 × (concurrency %d ÷ %d ms)", concurrency, ms), stat{0.8 * ceiling, 0.8 * ceiling, 0.8 * ceiling},
			fmt.Sprintf("asyncmonolith at %.3g× of it (ceiling %.0f msg/s)", o.med/(0.8*ceiling), ceiling))
	}
	return nil
}

// runMix: consumers that wait and write through Message.Tx; some fail once.
func runMix(c config, schema string, r *report) error {
	rs, drop, err := riverSchemaFor(c)
	if err != nil {
		return err
	}
	defer drop()
	n := c.waitN
	r.section(fmt.Sprintf("realistic mixes: burn-down of %d messages (messages/s); River's worker writes in its own transaction and completes the job in it (JobCompleteTx); both pools capped at %d connections", n, riverMaxConns))
	writes := waitJobs(n, 10)
	for i := range writes {
		writes[i].Write = true
	}
	if !c.quick { // the failing mix below writes as well
		p, err := comparePair(c, schema, rs, spec{jobs: writes, maxOpen: riverMaxConns})
		if err != nil {
			return err
		}
		addPair(r, "wait 10 ms, then write 1 row through Message.Tx", p, "default Config", "")
	}
	fails := waitJobs(n, 10)
	for i := range fails {
		fails[i].Write = true
		fails[i].FailOnce = i%10 == 0
	}
	p, err := comparePair(c, schema, rs, spec{cfg: am.Config{AttemptDelay: time.Millisecond}, jobs: fails, maxOpen: riverMaxConns})
	if err != nil {
		return err
	}
	addPair(r, "the same, 10 % fail once after their write", p, "AttemptDelay 1 ms (River: retry at once)", "")
	return nil
}

// runStraggler: 1,000 messages of 10 ms, with and without one of 2 s ahead of them.
func runStraggler(c config, schema string, r *report) error {
	rs, drop, err := riverSchemaFor(c)
	if err != nil {
		return err
	}
	defer drop()
	const fast = 1000
	r.section(fmt.Sprintf("straggler: %d messages that wait 10 ms, with and without one that waits 2 s produced first (fast messages/s)", fast))
	alone := waitJobs(fast, 10)
	with := append([]Job{{N: -1, WaitMs: 2000}}, alone...)
	pw, err := comparePair(c, schema, rs, spec{jobs: with, straggler: true})
	if err != nil {
		return err
	}
	pa, err := comparePair(c, schema, rs, spec{jobs: alone})
	if err != nil {
		return err
	}
	ow, rw := addPair(r, "with the straggler", pw, "defaults", "")
	oa, ra := addPair(r, "without", pa, "defaults", "")
	pr := pairedRatios(pw.ours, pa.ours)
	r.add("asyncmonolith: with ÷ without", ratioStat(ow, oa), fmt.Sprintf("run by run %.2f× (%.2f–%.2f); target ≥ 0.5", pr.med, pr.min, pr.max))
	if len(pw.river) > 0 {
		pr := pairedRatios(pw.river, pa.river)
		r.add("River: with ÷ without", ratioStat(rw, ra), fmt.Sprintf("run by run %.2f× (%.2f–%.2f)", pr.med, pr.min, pr.max))
	}
	return nil
}

// runAppWrite: the application's own transaction (Create + Produce) while queued consumers
// wait 200 ms each.
func runAppWrite(c config, schema string, r *report) error {
	const queued, waitMs = 3000, 200
	r.section(fmt.Sprintf("app writes while consumers wait: db.Transaction(Create(&order); Produce(tx, …)) every 10 ms for %s, %d queued messages whose consumer waits %d ms, default Config (ms)",
		c.appDur, queued, waitMs))
	// The control runs the same transactions with the messages queued and no processor
	// started: what this machine gives the application's writes at the time.
	for _, running := range []bool{true, false} {
		var p50s, p99s, maxs, waiting []float64
		var errs, txs int
		for range c.runs {
			db, err := openGorm(c, schema)
			if err != nil {
				return err
			}
			w, err := newWorkload(c, db, am.Config{})
			if err != nil {
				return err
			}
			lats, during, nerr, err := appWriteOnce(w, waitJobs(queued, waitMs), c.appDur, running)
			if running {
				w.stopNow()
			}
			w.close()
			if err != nil {
				return err
			}
			sort.Float64s(lats)
			p50s = append(p50s, lats[len(lats)/2])
			p99s = append(p99s, lats[int(0.99*float64(len(lats)-1))])
			maxs = append(maxs, lats[len(lats)-1])
			waiting = append(waiting, during)
			errs += nerr
			txs += len(lats)
		}
		what, target := "consumers waiting", "target < 50 ms (SQLite)"
		if !running {
			what, target = "control, no processor started", ""
		}
		note := fmt.Sprintf("%d transactions, %d failed; consumers waiting when a transaction began: median %.0f", txs, errs, statOf(waiting).med)
		r.add(what+": app transaction p50", statOf(p50s), note)
		r.add(what+": app transaction p99", statOf(p99s), target)
		r.add(what+": app transaction max", statOf(maxs), "")
	}
	return nil
}

// appWriteOnce fills jobs, starts the processors (if start), and once a consumer runs,
// commits an order and a message every 10 ms for d; it returns each transaction's
// milliseconds (failed ones included), the median number of consumers running as they
// began, and how many failed.
func appWriteOnce(w *workload, jobs []Job, d time.Duration, start bool) (lats []float64, waiting float64, failed int, err error) {
	if err := w.fillJobs(jobs); err != nil {
		return nil, 0, 0, err
	}
	if start {
		if err := w.p.Start(context.Background()); err != nil {
			return nil, 0, 0, err
		}
		select {
		case <-w.started:
		case <-time.After(30 * time.Second):
			return nil, 0, 0, fmt.Errorf("appwrite: no consumer started in 30 s")
		}
	}
	var during []float64
	for i, end := 0, time.Now().Add(d); time.Now().Before(end); i++ {
		during = append(during, float64(w.inflight.Load()))
		t0 := time.Now()
		err := w.db.Transaction(func(tx *gorm.DB) error {
			if err := tx.Create(&Order{N: i}).Error; err != nil {
				return err
			}
			return am.Produce(tx, Tick{N: i}).Error
		})
		lats = append(lats, float64(time.Since(t0).Microseconds())/1000)
		if err != nil {
			failed++
			if failed == 1 {
				fmt.Fprintln(os.Stderr, "  appwrite: app transaction failed:", err)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return lats, statOf(during).med, failed, nil
}

// stopNow stops the processors without awaiting running consumers beyond a moment.
func (w *workload) stopNow() {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = w.p.Stop(ctx)
}

// runConns samples the connections held while 100 waiting consumers run on one processor.
func runConns(c config, schema string, r *report) error {
	const concurrency, waitMs, queued = 100, 100, 5000
	const window = 2 * time.Second
	r.section(fmt.Sprintf("connections while %d consumers that wait %d ms run on one processor (ConsumerConcurrency %d, otherwise default Config), sampled every 10 ms for %s (the server's count every 100 ms)",
		concurrency, waitMs, concurrency, window))
	app := "am_bench_conns"
	var admin *sql.DB
	var serverQ string
	var serverArg any
	switch c.dialect {
	case "postgres":
		var err error
		if admin, err = sql.Open("pgx", serverDSN(c)); err != nil {
			return err
		}
		serverQ, serverArg = "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1", app
	case "mysql":
		var err error
		if admin, err = sql.Open("mysql", serverDSN(c)); err != nil {
			return err
		}
		serverQ, serverArg = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = ?", schema
	}
	if admin != nil {
		defer admin.Close()
		admin.SetMaxOpenConns(1)
	}
	for _, write := range []bool{false, true} {
		jobs, what := waitJobs(queued, waitMs), "wait only"
		if write {
			what = "wait, then write 1 row through Message.Tx"
			for i := range jobs {
				jobs[i].Write = true
			}
		}
		var running, open, inUse, server, serverAll []float64
		for range c.runs {
			dsn := dsnFor(c, schema)
			if c.dialect == "postgres" {
				dsn += " application_name=" + app
			}
			db, err := openGormDSN(c, dsn)
			if err != nil {
				return err
			}
			w, err := newWorkload(c, db, am.Config{ConsumerConcurrency: concurrency})
			if err != nil {
				return err
			}
			s, err := connsOnce(w, jobs, window, admin, serverQ, serverArg, c.dialect == "postgres")
			w.stopNow()
			w.close()
			if err != nil {
				return err
			}
			running, open, inUse = append(running, s[0]), append(open, s[1]), append(inUse, s[2])
			server, serverAll = append(server, s[3]), append(serverAll, s[4])
		}
		r.add(what+": consumers running at once (median sample)", statOf(running), "")
		r.add(what+": sql.DB Stats().OpenConnections (most seen)", statOf(open), "the one pool of the app and the plugin (uncapped)")
		r.add(what+": sql.DB Stats().InUse (most seen)", statOf(inUse), "")
		switch c.dialect {
		case "postgres":
			r.add(what+": pg_stat_activity, this pool's application_name (most seen)", statOf(server), "")
			r.add(what+": pg_stat_activity WHERE datname = current_database() (most seen)", statOf(serverAll), "includes other sessions on this shared server")
		case "mysql":
			r.add(what+": PROCESSLIST connections on this bench database (most seen)", statOf(server), "")
		}
	}
	return nil
}

// connsOnce fills jobs, starts the processors and, once a consumer runs, samples every
// 10 ms for window: consumers running (median), OpenConnections, InUse, and the server's
// count of this pool's connections and (PostgreSQL) of the database's (most seen).
func connsOnce(w *workload, jobs []Job, window time.Duration, admin *sql.DB, serverQ string, serverArg any, pg bool) ([5]float64, error) {
	var out [5]float64
	if err := w.fillJobs(jobs); err != nil {
		return out, err
	}
	sqlDB, err := w.db.DB()
	if err != nil {
		return out, err
	}
	if err := w.p.Start(context.Background()); err != nil {
		return out, err
	}
	select {
	case <-w.started:
	case <-time.After(30 * time.Second):
		return out, fmt.Errorf("conns: no consumer started in 30 s")
	}
	var running []float64
	for i, end := 0, time.Now().Add(window); time.Now().Before(end); i++ {
		running = append(running, float64(w.inflight.Load()))
		st := sqlDB.Stats()
		out[1] = max(out[1], float64(st.OpenConnections))
		out[2] = max(out[2], float64(st.InUse))
		if admin != nil && i%10 == 0 {
			var n int64
			if err := admin.QueryRow(serverQ, serverArg).Scan(&n); err != nil {
				return out, err
			}
			out[3] = max(out[3], float64(n))
			if pg {
				if err := admin.QueryRow("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()").Scan(&n); err != nil {
					return out, err
				}
				out[4] = max(out[4], float64(n))
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	out[0] = statOf(running).med
	return out, nil
}
