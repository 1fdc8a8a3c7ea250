package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// NoopArgs is River's job.
type NoopArgs struct{}

// Kind names River's job kind.
func (NoopArgs) Kind() string { return "noop" }

// NoopWorker does nothing.
type NoopWorker struct {
	river.WorkerDefaults[NoopArgs]
}

// Work does nothing.
func (NoopWorker) Work(context.Context, *river.Job[NoopArgs]) error { return nil }

// riverBurnDown inserts n jobs in batches of 5,000 (untimed), then starts one client with
// `workers` workers and times until n completions arrive on its event subscription — the
// method of `river bench`, with its throughput settings (fetch cooldown 2 ms, poll 20 ms).
func riverBurnDown(c config, schema string, n, workers int) (float64, error) {
	ctx := context.Background()
	pcfg, err := pgxpool.ParseConfig(serverDSN(c) + " search_path=" + schema)
	if err != nil {
		return 0, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	driver := riverpgxv5.New(pool)
	migrator, err := rivermigrate.New(driver, nil)
	if err != nil {
		return 0, err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return 0, err
	}
	if _, err := pool.Exec(ctx, "TRUNCATE river_job"); err != nil {
		return 0, err
	}
	workersReg := river.NewWorkers()
	river.AddWorker(workersReg, &NoopWorker{})
	client, err := river.NewClient(driver, &river.Config{
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: workers}},
		Workers:           workersReg,
		FetchCooldown:     2 * time.Millisecond,
		FetchPollInterval: 20 * time.Millisecond,
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return 0, err
	}
	params := make([]river.InsertManyParams, 5000)
	for i := range params {
		params[i] = river.InsertManyParams{Args: NoopArgs{}}
	}
	for left := n; left > 0; left -= len(params) {
		if _, err := client.InsertMany(ctx, params[:min(left, len(params))]); err != nil {
			return 0, err
		}
	}
	events, cancel := client.SubscribeConfig(&river.SubscribeConfig{ChanSize: n + 1000, Kinds: []river.EventKind{river.EventKindJobCompleted}})
	defer cancel()
	start := time.Now()
	if err := client.Start(ctx); err != nil {
		return 0, err
	}
	done := 0
	timeout := time.After(5 * time.Minute)
	for done < n {
		select {
		case <-events:
			done++
		case <-timeout:
			return 0, fmt.Errorf("river: %d of %d after 5 minutes", done, n)
		}
	}
	elapsed := time.Since(start)
	stopCtx, stop := context.WithTimeout(ctx, 30*time.Second)
	defer stop()
	_ = client.Stop(stopCtx)
	return float64(n) / elapsed.Seconds(), nil
}
