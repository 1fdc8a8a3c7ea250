package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"gorm.io/gorm"
)

// Doomed is a payload whose consumer always fails.
type Doomed struct {
	N int `json:"n"`
}

// poisonStorm measures healthy burn-down throughput alone, then with 10,000 messages
// whose consumer always fails queued ahead of them (MaxAttempts 2), with the consumer
// breaker on (the default: the failing consumer is paused and its backlog set aside) and
// off (every failing message is run until poisoned).
func poisonStorm(c config, schema string) (base, storm, stormNoBreaker stat, err error) {
	if base, err = measure(c.runs, func() (float64, error) {
		return healthyRate(c, schema, 0, am.Config{MaxAttempts: 2, AttemptDelay: time.Millisecond})
	}); err != nil {
		return
	}
	if storm, err = measure(c.runs, func() (float64, error) {
		return healthyRate(c, schema, 10_000, am.Config{MaxAttempts: 2, AttemptDelay: time.Millisecond})
	}); err != nil {
		return
	}
	stormNoBreaker, err = measure(c.runs, func() (float64, error) {
		return healthyRate(c, schema, 10_000, am.Config{MaxAttempts: 2, AttemptDelay: time.Millisecond, DisableBreaker: true})
	})
	return
}

// healthyRate burns down min(c.n, 50,000) healthy no-op messages queued behind doomed
// messages whose consumer always fails, and returns the healthy messages per second. cfg
// sets the retry behaviour (MaxAttempts, AttemptDelay, RetryPolicy, DisableBreaker).
func healthyRate(c config, schema string, doomed int, cfg am.Config) (float64, error) {
	return healthyRateOf(c, schema, doomed, cfg, false)
}

// healthyRateOf is healthyRate; with retrying, the doomed messages have all run once
// (they are retrying) before the healthy ones are produced, and the figure counts from the
// first healthy message produced to the last consumed, the processors running all along.
func healthyRateOf(c config, schema string, doomed int, cfg am.Config, retrying bool) (float64, error) {
	db, err := openGorm(c, schema)
	if err != nil {
		return 0, err
	}
	defer func() {
		if s, err := db.DB(); err == nil {
			s.Close()
		}
	}()
	var healthy atomic.Int64
	procs := 2
	if c.dialect == "sqlite" {
		procs = 1
	}
	cfg.ConsumerProcessors, cfg.ProcessorMinDelay = procs, time.Microsecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Hooks = am.Hooks{AfterConsume: func(ctx context.Context, m am.MessageInfo, r am.Result) {
		if r.Err == nil && m.ConsumerType == "Noop" {
			healthy.Add(1)
		}
	}}
	p := am.New(cfg)
	if err := db.Use(p); err != nil {
		return 0, err
	}
	if err := p.Migrate(context.Background(), db); err != nil {
		return 0, err
	}
	if err := am.Register[Tick](p, am.ConsumerFunc[Tick](func(context.Context, *am.Message[Tick]) error { return nil }), am.WithName("Noop")); err != nil {
		return 0, err
	}
	if err := am.Register[Doomed](p, am.ConsumerFunc[Doomed](func(context.Context, *am.Message[Doomed]) error {
		return errors.New("always fails")
	}), am.WithName("Doomed")); err != nil {
		return 0, err
	}
	clear := "TRUNCATE TABLE consumer_messages"
	if c.dialect == "sqlite" {
		clear = "DELETE FROM consumer_messages"
	}
	if err := db.Exec(clear).Error; err != nil {
		return 0, err
	}
	fill := func(n int, payload func(i int) any) error {
		for i := 0; i < n; i += 1000 {
			err := db.Transaction(func(tx *gorm.DB) error {
				for j := i; j < min(n, i+1000); j += 100 {
					var batch []any
					for k := j; k < min(n, j+100, i+1000); k++ {
						batch = append(batch, payload(k))
					}
					for _, b := range batch {
						if err := am.Produce(tx, b).Error; err != nil {
							return err
						}
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
	if err := fill(doomed, func(i int) any { return Doomed{N: i} }); err != nil {
		return 0, err
	}
	n := min(c.n, 50_000)
	if retrying {
		if err := p.Start(context.Background()); err != nil {
			return 0, err
		}
		for p.Counters().Failed < uint64(doomed) {
			time.Sleep(time.Millisecond)
		}
	} else if err := fill(n, func(i int) any { return Tick{N: i} }); err != nil {
		return 0, err
	}
	start := time.Now()
	if retrying {
		if err := fill(n, func(i int) any { return Tick{N: i} }); err != nil {
			return 0, err
		}
	} else if err := p.Start(context.Background()); err != nil {
		return 0, err
	}
	for healthy.Load() < int64(n) {
		if time.Since(start) > 5*time.Minute {
			return 0, fmt.Errorf("healthy burn-down: %d of %d after 5 minutes", healthy.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
	el := time.Since(start)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = p.Stop(ctx)
	return float64(n) / el.Seconds(), nil
}
