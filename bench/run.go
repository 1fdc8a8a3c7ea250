package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"sync"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

func run(ctx context.Context, c config) error {
	if c.childProducer {
		return childProducer(c)
	}
	if c.waitN <= 0 {
		c.waitN = 5_000
	}
	if c.quick {
		c.waitN = min(c.waitN, 50)
	}
	if c.appDur <= 0 {
		c.appDur = 3 * time.Second
	}
	var r report
	schema, drop, err := newSchema(c, "bench_")
	if err != nil {
		return err
	}
	defer drop()
	fmt.Fprintf(os.Stderr, "bench on %s (schema %s)\n", c.dialect, schema)
	raw, err := openRaw(c, schema)
	if err != nil {
		return err
	}
	fl := &floor{db: raw, dialect: c.dialect}
	if c.wants("produce") {
		if err := runProduce(c, schema, fl, &r); err != nil {
			return err
		}
	}
	if c.wants("burndown") {
		if err := runBurnDown(c, schema, fl, &r); err != nil {
			return err
		}
	}
	real := []struct {
		name  string
		quick bool // part of the quick (CI) run
		run   func(config, string, *report) error
	}{{"waiting", true, runWaiting}, {"mix", true, runMix}, {"straggler", false, runStraggler},
		{"appwrite", false, runAppWrite}, {"conns", false, runConns},
		{"rails", false, runRails}}
	for _, s := range real {
		if c.wants(s.name) && (s.quick || !c.quick) {
			if err := s.run(c, schema, &r); err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
		}
	}
	if c.wants("storm") && !c.quick {
		r.section("poison storm: healthy messages/s, 2 processors (SQLite: 1)")
		base, storm, noBreaker, err := poisonStorm(c, schema)
		if err != nil {
			return err
		}
		r.add("healthy only", base, "")
		r.add("healthy + 10,000 always-failing messages ahead of them", storm, ratio(storm, base)+" of healthy only (breaker on: the default)")
		r.add("the same with DisableBreaker", noBreaker, ratio(noBreaker, base)+" of healthy only")
	}
	if c.wants("backoff") && !c.quick {
		r.section("backoff: healthy messages/s while 10,000 always-failing messages retry (MaxAttempts 10, DisableBreaker), 2 processors (SQLite: 1)")
		base, backoff, fixed, err := backoffStorm(c, schema)
		if err != nil {
			return err
		}
		r.add("healthy only, produced while the processors run", base, "")
		r.add("retries following ExponentialBackoff{} (the defaults)", backoff, ratio(backoff, base)+" of healthy only (target ≥ 0.9)")
		r.add("retries after a fixed 1 ms", fixed, ratio(fixed, base)+" of healthy only")
	}
	if c.wants("latency") {
		if err := runLatency(c, schema, &r); err != nil {
			return err
		}
	}
	if c.wants("backlog") {
		if err := runBacklog(c, schema, &r); err != nil {
			return err
		}
	}
	r.print(c)
	return nil
}

// runProduce measures Produce and ProduceBatch against the floor's multi-VALUES insert.
func runProduce(c config, schema string, fl *floor, r *report) error {
	produceN := min(c.n, 20_000)
	single := min(c.n, 2_000)
	r.section("produce (messages/s)")
	o, err := newOurs(c, schema, am.Config{})
	if err != nil {
		return err
	}
	one, err := measure(c.runs, func() (float64, error) { return o.produce(single, 1, false) })
	if err != nil {
		return err
	}
	r.add("Produce, 1 per transaction", one, "")
	hundred, err := measure(c.runs, func() (float64, error) { return o.produce(produceN, 100, false) })
	if err != nil {
		return err
	}
	hundredAllocs := o.allocsPerMsg
	batch, err := measure(c.runs, func() (float64, error) { return o.produce(produceN, 100, true) })
	if err != nil {
		return err
	}
	batchAllocs := o.allocsPerMsg
	rawIns, err := measure(c.runs, func() (float64, error) { return fl.produce(produceN, 100) })
	if err != nil {
		return err
	}
	r.add("Produce ×100 in db.Transaction", hundred, fmt.Sprintf("%s of raw floor; %.0f allocs/msg", ratio(hundred, rawIns), hundredAllocs))
	r.add("ProduceBatch of 100 in db.Transaction", batch, fmt.Sprintf("%s of raw floor; %.0f allocs/msg", ratio(batch, rawIns), batchAllocs))
	r.add("raw floor: one 100-row multi-VALUES INSERT per tx", rawIns, "")
	o.close()
	return nil
}

// runBurnDown measures burn-down consumption for several processor counts and batch sizes,
// beside the floor and (PostgreSQL, section "river") River.
func runBurnDown(c config, schema string, fl *floor, r *report) error {
	r.section(fmt.Sprintf("burn-down consume of %d no-op messages (messages/s)", c.n))
	type cfg struct{ procs, batch int }
	cfgs := []cfg{{1, 100}, {2, 100}, {4, 100}, {1, 20}, {1, 500}}
	if c.dialect == "sqlite" {
		cfgs = []cfg{{1, 100}, {1, 20}, {1, 500}}
	}
	if c.quick {
		cfgs = cfgs[:1]
	}
	ourBest := map[int]stat{}
	for _, k := range cfgs {
		o, err := newOurs(c, schema, am.Config{ConsumerProcessors: k.procs, ProcessorBatchSize: k.batch,
			ProcessorMinDelay: time.Microsecond, ScheduleProcessors: 1})
		if err != nil {
			return err
		}
		// Ours and the floor alternate which goes first in each run, so that neither
		// systematically meets the database in a better state (autovacuum, caches).
		var oursRuns, floorRuns []float64
		var conflicts uint64
		var allocs float64
		var cpu, floorCPU time.Duration
		for run := range c.runs {
			floorFirst := k.batch == 100 && run%2 == 1
			if floorFirst {
				f, err := burnDownFloor(c, schema, fl, k.procs, k.batch)
				if err != nil {
					return err
				}
				floorRuns = append(floorRuns, f)
				floorCPU += fl.cpuPerMsg / time.Duration(c.runs)
			}
			x, err := o.burnDown(c.n)
			if err != nil {
				return err
			}
			oursRuns = append(oursRuns, x)
			conflicts += o.conflicts
			allocs += o.allocsPerMsg / float64(c.runs)
			cpu += o.cpuPerMsg / time.Duration(c.runs)
			if k.batch == 100 && !floorFirst {
				f, err := burnDownFloor(c, schema, fl, k.procs, k.batch)
				if err != nil {
					return err
				}
				floorRuns = append(floorRuns, f)
				floorCPU += fl.cpuPerMsg / time.Duration(c.runs)
			}
		}
		o.close()
		note := ""
		if k.batch == 100 {
			pairs := pairedRatios(oursRuns, floorRuns)
			f := statOf(floorRuns)
			ourBest[k.procs] = statOf(oursRuns)
			r.add(fmt.Sprintf("raw floor: %d worker(s), batch %d", k.procs, k.batch), f, fmt.Sprintf("%.1f µs CPU/msg here", us(floorCPU)))
			note = fmt.Sprintf("%s of raw floor (run by run: %.2f×, %.2f–%.2f); ", ratio(ourBest[k.procs], f), pairs.med, pairs.min, pairs.max)
		}
		s := statOf(oursRuns)
		note += fmt.Sprintf("%.1f µs CPU/msg here; %.0f allocs/msg; %d conflicts retried", us(cpu), allocs, conflicts)
		r.add(fmt.Sprintf("asyncmonolith: %d processor(s), batch %d", k.procs, k.batch), s, note)
	}
	if c.dialect == "postgres" && c.wants("river") {
		rs, dropRiver, err := newSchema(c, "river_")
		if err != nil {
			return err
		}
		defer dropRiver()
		workers := 100
		s, err := measure(c.runs, func() (float64, error) { return riverBurnDown(c, rs, c.n, workers) })
		if err != nil {
			return err
		}
		r.add(fmt.Sprintf("River %d workers (river bench settings)", workers), s, "")
		for procs, ours := range ourBest {
			r.add(fmt.Sprintf("asyncmonolith %d processor(s) ÷ River", procs), stat{ours.min / s.max, ours.med / s.med, ours.max / s.min}, "ratio")
		}
	}

	return nil
}

// runLatency measures commit→consume latency, producer in this process and in another.
func runLatency(c config, schema string, r *report) error {
	// Latency.
	r.section("commit→consume latency (ms)")
	for _, other := range []bool{false, true} {
		if c.quick && other {
			break
		}
		lat, err := latency(c, schema, other)
		if err != nil {
			return err
		}
		where := "same process"
		if other {
			where = "another process"
		}
		for i, q := range []string{"p50", "p95", "p99"} {
			r.add(fmt.Sprintf("%s, %s, 2 processors (SQLite: 1)", q, where), lat[i], "")
		}
	}

	return nil
}

// runBacklog measures batch time and throughput with a small and a large backlog.
func runBacklog(c config, schema string, r *report) error {
	r.section("backlog, kept at its size (topped up after each batch, untimed): ms per batch of 100 / messages/s, 1 processor")
	sizes := []int{1_000, c.backlog}
	if c.quick {
		sizes = []int{1_000}
	}
	// Each size gets a schema of its own, filled first; then the database is let settle
	// (a checkpoint, InnoDB's dirty pages flushed), and the sizes are measured in turn,
	// run after run, so that both meet the same machine and the same server state rather
	// than one of them the aftermath of a million inserts.
	type side struct {
		size      int
		o         *ours
		ms, rates []float64
	}
	var sides []*side
	for i, size := range sizes {
		s := schema
		if i > 0 {
			sch, drop, err := newSchema(c, "backlog_")
			if err != nil {
				return err
			}
			defer drop()
			s = sch
		}
		o, err := newOurs(c, s, am.Config{})
		if err != nil {
			return err
		}
		defer o.close()
		if err := o.truncate(); err != nil {
			return err
		}
		if err := o.fill(size); err != nil {
			return err
		}
		sides = append(sides, &side{size: size, o: o})
	}
	settle(c, sides[0].o.db)
	for run := range c.runs {
		for j := range sides {
			sd := sides[(j+run)%len(sides)] // alternate which size goes first
			m, rt, err := sd.o.batchTimes(200)
			if err != nil {
				return err
			}
			sd.ms, sd.rates = append(sd.ms, m), append(sd.rates, rt)
		}
	}
	if len(sides) == 2 {
		pairs := pairedRatios(sides[1].rates, sides[0].rates)
		for _, sd := range sides {
			r.add(fmt.Sprintf("%d pending: ms per batch", sd.size), statOf(sd.ms), "")
			r.add(fmt.Sprintf("%d pending: messages/s", sd.size), statOf(sd.rates), "")
		}
		a, b := statOf(sides[0].rates), statOf(sides[1].rates)
		r.add(fmt.Sprintf("%d pending ÷ %d pending, messages/s", sizes[1], sizes[0]), stat{b.min / a.max, b.med / a.med, b.max / a.min},
			fmt.Sprintf("ratio of medians (min÷max–max÷min); run by run: %.2f×, %.2f–%.2f", pairs.med, pairs.min, pairs.max))
		return nil
	}
	for _, sd := range sides {
		r.add(fmt.Sprintf("%d pending: ms per batch", sd.size), statOf(sd.ms), "")
		r.add(fmt.Sprintf("%d pending: messages/s", sd.size), statOf(sd.rates), "")
	}
	return nil
}

// settle waits for the database to write out what large fills left in memory: a
// CHECKPOINT on PostgreSQL, InnoDB's dirty pages on MariaDB (until few are left or the
// count stops falling, at most a minute), a WAL checkpoint on SQLite.
func settle(c config, db *gorm.DB) {
	start := time.Now()
	switch c.dialect {
	case "postgres":
		if err := db.Exec("CHECKPOINT").Error; err != nil {
			fmt.Fprintln(os.Stderr, "  settle: CHECKPOINT:", err)
		}
	case "sqlite":
		if err := db.Exec("PRAGMA wal_checkpoint(TRUNCATE)").Error; err != nil {
			fmt.Fprintln(os.Stderr, "  settle: wal_checkpoint:", err)
		}
	case "mysql":
		dirty := func() int64 {
			var name string
			var v int64
			if err := db.Raw("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'").Row().Scan(&name, &v); err != nil {
				return -1
			}
			return v
		}
		last, still := dirty(), 0
		for last > 200 && still < 6 && time.Since(start) < time.Minute {
			time.Sleep(500 * time.Millisecond)
			d := dirty()
			if d >= last {
				still++
			} else {
				still = 0
			}
			last = d
		}
		fmt.Fprintf(os.Stderr, "  settle: %d InnoDB dirty pages left\n", last)
	}
	fmt.Fprintf(os.Stderr, "  settle: %.1f s\n", time.Since(start).Seconds())
}

// pairedRatios is ours[i] ÷ floor[i] for runs made back to back: slow spells of a shared
// machine hit both sides of a pair, so these spread less than a ratio of medians.
func pairedRatios(ours, floor []float64) stat {
	var rs []float64
	for i := range min(len(ours), len(floor)) {
		rs = append(rs, ours[i]/floor[i])
	}
	return statOf(rs)
}

// us is d in microseconds.
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func statOf(xs []float64) stat {
	sort.Float64s(xs)
	return stat{xs[0], xs[len(xs)/2], xs[len(xs)-1]}
}

func burnDownFloor(c config, schema string, fl *floor, workers, batch int) (float64, error) {
	if err := fillRaw(c, schema, c.n); err != nil {
		return 0, err
	}
	return fl.consume(workers, batch)
}

func fillRaw(c config, schema string, n int) error {
	o, err := newOurs(c, schema, am.Config{})
	if err != nil {
		return err
	}
	defer o.close()
	if err := o.truncate(); err != nil {
		return err
	}
	return o.fill(n)
}

// latency runs a producer at c.rate messages/s for c.latencyDur (in this process, or in a
// child process) while 2 processors consume, and returns p50/p95/p99 of commit→consume.
func latency(c config, schema string, otherProcess bool) ([3]stat, error) {
	var out [3]stat
	var runs [3][]float64
	for range c.runs {
		procs := 2
		if c.dialect == "sqlite" {
			procs = 1
		}
		o, err := newOurs(c, schema, am.Config{ConsumerProcessors: procs, ProcessorMinDelay: time.Millisecond,
			ProcessorMaxDelay: 100 * time.Millisecond})
		if err != nil {
			return out, err
		}
		if err := o.truncate(); err != nil {
			return out, err
		}
		var mu sync.Mutex
		var lats []float64
		o.onConsume = func(m *am.Message[Tick]) {
			if m.Payload.Sent == 0 {
				return
			}
			d := float64(time.Now().UnixNano()-m.Payload.Sent) / 1e6
			mu.Lock()
			lats = append(lats, d)
			mu.Unlock()
		}
		if err := o.p.Start(context.Background()); err != nil {
			return out, err
		}
		if otherProcess {
			err = runChild(c, schema)
		} else {
			err = produceAtRate(o, c.rate, c.latencyDur)
		}
		time.Sleep(300 * time.Millisecond)
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = o.p.Stop(stopCtx)
		cancel()
		o.close()
		if err != nil {
			return out, err
		}
		sort.Float64s(lats)
		if len(lats) == 0 {
			return out, fmt.Errorf("latency: nothing consumed")
		}
		for i, q := range []float64{0.50, 0.95, 0.99} {
			runs[i] = append(runs[i], lats[int(q*float64(len(lats)-1))])
		}
	}
	for i := range runs {
		out[i] = statOf(runs[i])
	}
	return out, nil
}

// produceAtRate commits one message per transaction at a steady rate.
func produceAtRate(o *ours, rate int, d time.Duration) error {
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	end := time.Now().Add(d)
	for i := 0; time.Now().Before(end); i++ {
		<-tick.C
		err := o.db.Transaction(func(tx *gorm.DB) error {
			return am.Produce(tx, Tick{N: i, Sent: time.Now().UnixNano()}).Error
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// runChild re-executes this binary as the producer in another process.
func runChild(c config, schema string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, "-child-producer", "-db", c.dialect, "-dsn", serverDSN(c), "-schema", schema,
		"-rate", strconv.Itoa(c.rate), "-latency-duration", c.latencyDur.String())
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
	}
	return cmd.Wait()
}

func childProducer(c config) error {
	o, err := newOurs(c, c.schema, am.Config{})
	if err != nil {
		return err
	}
	defer o.close()
	return produceAtRate(o, c.rate, c.latencyDur)
}
