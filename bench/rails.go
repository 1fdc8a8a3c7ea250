package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

// The rails section (issue 17): a rail whose consumer takes 2 s per message, saturated (far
// more messages queued than it has slots), beside the default rail's fast consumer (a 1 ms
// wait). The fast rail's burn-down throughput and commit→consume latency are measured with
// the slow rail saturated and, in the same process, in a run configured without it; each
// rail's commit→consume latency is printed.
var (
	railsSlowWait  = flag.Duration("rails-slow-wait", 2*time.Second, "rails: how long the slow rail's consumer takes per message")
	railsSlowSlots = flag.Int("rails-slow-slots", 4, "rails: the slow rail's ConsumerConcurrency (one processor)")
	railsFastWait  = flag.Duration("rails-fast-wait", time.Millisecond, "rails: how long the fast rail's consumer takes per message")
)

// RailFast and RailSlow are the payloads of the rails section; Sent is the commit time
// (UnixNano) of the messages whose latency is measured, 0 for the burn-down's.
type (
	RailFast struct {
		N    int   `json:"n"`
		Sent int64 `json:"sent"`
	}
	RailSlow struct {
		N    int   `json:"n"`
		Sent int64 `json:"sent"`
	}
)

// railsRun is one run of the rails section: one plugin, with or without the slow rail.
type railsRun struct {
	db        *gorm.DB
	p         *am.Plugin
	fastDone  atomic.Int64 // fast messages done (committed), counted by AfterConsume
	firstFast atomic.Int64 // UnixNano when the first fast consumer run started
	burnEnd   atomic.Int64 // UnixNano when the burn-down's last message was done
	burnN     int64        // the burn-down's size
	fastRuns  sync.Map     // fast message id → runs, to check each ran once
	slowStart atomic.Int64 // slow consumer runs started
	mu        sync.Mutex
	fastLat   []float64 // ms, commit→consume start, messages with Sent
	slowLat   []float64
}

// railsResult is what one run measured.
type railsResult struct {
	throughput       float64 // fast messages/s in the burn-down
	fastP50, fastP99 float64
	slowP50, slowP99 float64 // with the slow rail
	slowStarted      int64
	slowRunning      int64 // slow messages running at the end of the measurement (its slots)
	slowDue          int64 // and due, waiting for a slot
	repeated         int   // fast messages run more than once
}

func newRailsRun(c config, schema string, withSlow bool) (*railsRun, error) {
	db, err := openGorm(c, schema)
	if err != nil {
		return nil, err
	}
	rr := &railsRun{db: db}
	procs := 2
	if c.dialect == "sqlite" {
		procs = 1
	}
	cfg := am.Config{ConsumerProcessors: procs, ProcessorMinDelay: time.Millisecond, ProcessorMaxDelay: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Hooks: am.Hooks{AfterConsume: func(ctx context.Context, m am.MessageInfo, r am.Result) {
			if r.Err == nil && m.ConsumerType == "Fast" {
				if rr.fastDone.Add(1) == rr.burnN {
					rr.burnEnd.Store(time.Now().UnixNano())
				}
			}
		}}}
	if withSlow {
		cfg.Rails = map[string]am.RailConfig{"slow": {ConsumerProcessors: 1, ConsumerConcurrency: *railsSlowSlots, ProcessorBatchSize: *railsSlowSlots}}
	}
	rr.p = am.New(cfg)
	if err := db.Use(rr.p); err != nil {
		return nil, err
	}
	if err := rr.p.Migrate(context.Background(), db); err != nil {
		return nil, err
	}
	err = am.Register[RailFast](rr.p, am.ConsumerFunc[RailFast](func(ctx context.Context, m *am.Message[RailFast]) error {
		rr.firstFast.CompareAndSwap(0, time.Now().UnixNano())
		rr.record(&rr.fastLat, m.Payload.Sent)
		n, _ := rr.fastRuns.LoadOrStore(m.ID, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		return sleepCtx(ctx, *railsFastWait)
	}), am.WithName("Fast"))
	if err != nil {
		return nil, err
	}
	if withSlow {
		err = am.Register[RailSlow](rr.p, am.ConsumerFunc[RailSlow](func(ctx context.Context, m *am.Message[RailSlow]) error {
			rr.slowStart.Add(1)
			rr.record(&rr.slowLat, m.Payload.Sent)
			return sleepCtx(ctx, *railsSlowWait)
		}), am.WithName("Slow"), am.WithRail("slow"), am.WithTimeout(*railsSlowWait+time.Minute))
	}
	return rr, err
}

func (rr *railsRun) record(into *[]float64, sent int64) {
	if sent == 0 {
		return
	}
	d := float64(time.Now().UnixNano()-sent) / 1e6
	rr.mu.Lock()
	*into = append(*into, d)
	rr.mu.Unlock()
}

func (rr *railsRun) close() {
	if s, err := rr.db.DB(); err == nil {
		s.Close()
	}
}

// produce commits n messages made by mk, 500 per transaction.
func (rr *railsRun) produce(n int, mk func(i int) any) error {
	for i := 0; i < n; i += 500 {
		err := rr.db.Transaction(func(tx *gorm.DB) error {
			for j := i; j < min(n, i+500); j++ {
				if err := am.Produce(tx, mk(j)).Error; err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// measureRails is one run: truncate, queue the slow backlog (withSlow) and the fast
// burn-down, start, time the burn-down (first fast run to last fast done), then produce fast messages at c.rate for
// c.latencyDur, then read the slow rail's state before stopping.
func measureRails(c config, schema string, withSlow bool) (railsResult, error) {
	var res railsResult
	rr, err := newRailsRun(c, schema, withSlow)
	if err != nil {
		return res, err
	}
	defer rr.close()
	clear := "TRUNCATE TABLE consumer_messages"
	if c.dialect == "sqlite" {
		clear = "DELETE FROM consumer_messages"
	}
	if err := rr.db.Exec(clear).Error; err != nil {
		return res, err
	}
	if withSlow {
		// Enough 2 s messages to keep every slot busy for far longer than the measurement.
		slowN := *railsSlowSlots * (int((c.latencyDur+2*time.Minute) / *railsSlowWait) + 2)
		sent := time.Now().UnixNano()
		if err := rr.produce(slowN, func(i int) any { return RailSlow{N: i, Sent: sent} }); err != nil {
			return res, err
		}
	}
	n := c.waitN
	rr.burnN = int64(n)
	if err := rr.produce(n, func(i int) any { return RailFast{N: i} }); err != nil {
		return res, err
	}
	ctx := context.Background()
	start := time.Now()
	if err := rr.p.Start(ctx); err != nil {
		return res, err
	}
	stop := func() {
		// The slow runs are cut short (released, due again) when this ends; Stop returns
		// once every processor has.
		stopCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		_ = rr.p.Stop(stopCtx)
		cancel()
	}
	for rr.fastDone.Load() < int64(n) {
		if time.Since(start) > 2*time.Minute {
			stop()
			return res, fmt.Errorf("rails: %d of %d fast messages after 2 minutes", rr.fastDone.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
	// From the first fast run, not from Start: the processors' start-up is not the
	// rail's throughput.
	res.throughput = float64(n) / (float64(rr.burnEnd.Load()-rr.firstFast.Load()) / 1e9)

	tick := time.NewTicker(time.Second / time.Duration(c.rate))
	end := time.Now().Add(c.latencyDur)
	produced := 0
	for ; time.Now().Before(end); produced++ {
		<-tick.C
		err := rr.db.Transaction(func(tx *gorm.DB) error {
			return am.Produce(tx, RailFast{N: n + produced, Sent: time.Now().UnixNano()}).Error
		})
		if err != nil {
			tick.Stop()
			stop()
			return res, err
		}
	}
	tick.Stop()
	for deadline := time.Now().Add(10 * time.Second); rr.fastDone.Load() < int64(n+produced) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if withSlow {
		stats, err := rr.p.StatsByRail(ctx)
		if err != nil {
			stop()
			return res, err
		}
		for _, s := range stats {
			if s.Rail == "slow" {
				res.slowRunning, res.slowDue = s.Running, s.Due
			}
		}
	}
	stop()
	if got := rr.fastDone.Load(); got != int64(n+produced) {
		return res, fmt.Errorf("rails: %d of %d fast messages done", got, n+produced)
	}
	rr.fastRuns.Range(func(_, v any) bool {
		if v.(*atomic.Int64).Load() > 1 {
			res.repeated++
		}
		return true
	})
	res.slowStarted = rr.slowStart.Load()
	if len(rr.fastLat) == 0 {
		return res, errors.New("rails: no fast latency measured")
	}
	res.fastP50, res.fastP99 = quantile(rr.fastLat, 0.50), quantile(rr.fastLat, 0.99)
	if withSlow && len(rr.slowLat) > 0 {
		res.slowP50, res.slowP99 = quantile(rr.slowLat, 0.50), quantile(rr.slowLat, 0.99)
	}
	return res, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func quantile(xs []float64, q float64) float64 {
	sort.Float64s(xs)
	return xs[int(q*float64(len(xs)-1))]
}

// runRails runs the rails section: c.runs pairs of runs (without the slow rail and beside
// it, the first of a pair alternating), back to back, so that the paired ratios see the
// same machine and neither side always runs first.
func runRails(c config, schema string, r *report) error {
	var alone, beside []railsResult
	for i := range c.runs {
		var pair [2]railsResult
		for k := range 2 {
			withSlow := (k+i)%2 == 1
			res, err := measureRails(c, schema, withSlow)
			if err != nil {
				return err
			}
			pair[btoi(withSlow)] = res
		}
		alone, beside = append(alone, pair[0]), append(beside, pair[1])
	}
	col := func(rs []railsResult, f func(railsResult) float64) []float64 {
		var xs []float64
		for _, x := range rs {
			xs = append(xs, f(x))
		}
		return xs
	}
	thr := func(x railsResult) float64 { return x.throughput }
	p50 := func(x railsResult) float64 { return x.fastP50 }
	p99 := func(x railsResult) float64 { return x.fastP99 }
	saturated, repeated := 0, 0
	var started int64
	for _, b := range beside {
		if b.slowRunning == int64(*railsSlowSlots) && b.slowDue > 0 {
			saturated++
		}
		started += b.slowStarted
	}
	for _, x := range append(append([]railsResult{}, alone...), beside...) {
		repeated += x.repeated
	}
	r.section(fmt.Sprintf("rails: default rail's %s consumer beside a rail of %s consumers, %d slots, saturated (%d of %d runs: all slots running and messages due at the end)",
		*railsFastWait, *railsSlowWait, *railsSlowSlots, saturated, len(beside)))
	ta, tb := statOf(col(alone, thr)), statOf(col(beside, thr))
	r.add(fmt.Sprintf("fast rail burn-down of %d, msg/s, without the slow rail", c.waitN), ta, "")
	r.add(fmt.Sprintf("fast rail burn-down of %d, msg/s, slow rail saturated", c.waitN), tb,
		fmt.Sprintf("%s paired ratio to without (target ≥ 0.90)", pairedRatios(col(beside, thr), col(alone, thr))))
	r.add("fast rail commit→consume p50 ms, without the slow rail", statOf(col(alone, p50)), "")
	r.add("fast rail commit→consume p50 ms, slow rail saturated", statOf(col(beside, p50)),
		fmt.Sprintf("target < 5 ms; %s paired ratio to without", pairedRatios(col(beside, p50), col(alone, p50))))
	r.add("fast rail commit→consume p99 ms, without the slow rail", statOf(col(alone, p99)), "")
	r.add("fast rail commit→consume p99 ms, slow rail saturated", statOf(col(beside, p99)),
		fmt.Sprintf("%s paired ratio to without", pairedRatios(col(beside, p99), col(alone, p99))))
	r.add("slow rail commit→consume p50 ms (queued behind its backlog)", statOf(col(beside, func(x railsResult) float64 { return x.slowP50 })), "")
	r.add("slow rail commit→consume p99 ms", statOf(col(beside, func(x railsResult) float64 { return x.slowP99 })),
		fmt.Sprintf("%d slow runs started in all; fast messages run twice: %d", started, repeated))
	return nil
}
