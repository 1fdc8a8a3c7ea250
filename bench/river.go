package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync/atomic"
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

// JobArgs is River's analogue of Job.
type JobArgs struct{ Job }

// Kind names River's job kind.
func (JobArgs) Kind() string { return "job" }

// StragglerArgs is the straggler's kind (counted apart from the fast jobs).
type StragglerArgs struct{ Job }

// Kind names River's job kind.
func (StragglerArgs) Kind() string { return "straggler" }

// JobWorker does what the library's Job consumer does: wait, then (Write) insert a row
// in its own transaction and complete the job in it with JobCompleteTx — River's way to
// make a job's writes commit if and only if the job completes — and fail on the first
// attempt (FailOnce), rolling its write back. Retries are due at once, like ours with
// AttemptDelay 1 ms.
type JobWorker struct {
	river.WorkerDefaults[JobArgs]
	pool    *pgxpool.Pool
	runs    atomic.Int64
	written atomic.Int64 // writing jobs committed (their completion with them)
}

// NextRetry makes a failed job due again at once.
func (*JobWorker) NextRetry(*river.Job[JobArgs]) time.Time { return time.Now().Add(time.Millisecond) }

// Work runs one job.
func (w *JobWorker) Work(ctx context.Context, job *river.Job[JobArgs]) error {
	return workRiver(ctx, w.pool, &w.runs, &w.written, job, job.Args.Job)
}

// StragglerWorker runs the straggler.
type StragglerWorker struct {
	river.WorkerDefaults[StragglerArgs]
	runs atomic.Int64
}

// Work runs the straggler.
func (w *StragglerWorker) Work(ctx context.Context, job *river.Job[StragglerArgs]) error {
	w.runs.Add(1)
	return sleepCtx(ctx, time.Duration(job.Args.WaitMs)*time.Millisecond)
}

func workRiver[T river.JobArgs](ctx context.Context, pool *pgxpool.Pool, runs, written *atomic.Int64, job *river.Job[T], j Job) error {
	runs.Add(1)
	if err := sleepCtx(ctx, time.Duration(j.WaitMs)*time.Millisecond); err != nil {
		return err
	}
	if !j.Write {
		if j.FailOnce && job.Attempt == 1 {
			return errFailOnce
		}
		return nil
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "INSERT INTO bench_writes (msg_id, n) VALUES ($1, $2)", strconv.FormatInt(job.ID, 10), j.N); err != nil {
		return err
	}
	if j.FailOnce && job.Attempt == 1 {
		return errFailOnce // the deferred rollback undoes the write
	}
	if _, err := river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx, job); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	written.Add(1)
	return nil
}

// riverMaxConns caps River's pool (and ours, in the sections that write): writing workers
// hold a connection for their transaction (about 1 ms after a 10 ms wait: some 10 of 100
// at once), and the server here is shared (max_connections 100).
const riverMaxConns = 25

// riverBurnDown inserts n no-op jobs and times their burn-down (see riverRun).
func riverBurnDown(c config, schema string, n, workers int) (float64, error) {
	rate, _, err := riverRun(c, schema, workers, make([]Job, n), false)
	return rate, err
}

// riverRun inserts jobs (untimed; Job{} is a no-op job, and with straggler the first job is
// the straggler) in batches of 5,000, then starts one client with `workers` workers and times
// until every fast job is done — the method of `river bench`, with its throughput settings
// (fetch cooldown 2 ms, poll 20 ms). A job is done when its completion event arrives, or,
// for writing jobs, when its transaction (write and JobCompleteTx) committed. It returns
// messages/s of the fast jobs and what differed from a correct run ("" if nothing).
func riverRun(c config, schema string, workers int, jobs []Job, straggler bool) (float64, string, error) {
	ctx := context.Background()
	pcfg, err := pgxpool.ParseConfig(serverDSN(c) + " search_path=" + schema)
	if err != nil {
		return 0, "", err
	}
	pcfg.MaxConns = max(pcfg.MaxConns, riverMaxConns)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return 0, "", err
	}
	defer pool.Close()
	driver := riverpgxv5.New(pool)
	migrator, err := rivermigrate.New(driver, nil)
	if err != nil {
		return 0, "", err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return 0, "", err
	}
	if _, err := pool.Exec(ctx, "CREATE TABLE IF NOT EXISTS bench_writes (id bigserial PRIMARY KEY, msg_id text NOT NULL, n int NOT NULL)"); err != nil {
		return 0, "", err
	}
	if _, err := pool.Exec(ctx, "TRUNCATE river_job, bench_writes"); err != nil {
		return 0, "", err
	}
	workersReg := river.NewWorkers()
	river.AddWorker(workersReg, &NoopWorker{})
	jw := &JobWorker{pool: pool}
	river.AddWorker(workersReg, jw)
	sw := &StragglerWorker{}
	river.AddWorker(workersReg, sw)
	client, err := river.NewClient(driver, &river.Config{
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: workers}},
		Workers:           workersReg,
		FetchCooldown:     2 * time.Millisecond,
		FetchPollInterval: 20 * time.Millisecond,
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return 0, "", err
	}
	noop := jobs[0] == (Job{})
	fast, writers, wantRuns := 0, 0, 0
	params := make([]river.InsertManyParams, 0, 5000)
	flush := func() error {
		if len(params) == 0 {
			return nil
		}
		_, err := client.InsertMany(ctx, params)
		params = params[:0]
		return err
	}
	for i, j := range jobs {
		var args river.JobArgs = JobArgs{Job: j}
		switch {
		case noop:
			args = NoopArgs{}
		case straggler && i == 0:
			args = StragglerArgs{Job: j}
		default:
			fast++
			wantRuns++
			if j.FailOnce {
				wantRuns++
			}
			if j.Write {
				writers++
			}
		}
		params = append(params, river.InsertManyParams{Args: args})
		if len(params) == cap(params) {
			if err := flush(); err != nil {
				return 0, "", err
			}
		}
	}
	if err := flush(); err != nil {
		return 0, "", err
	}
	if noop {
		fast = len(jobs)
	}
	events, cancel := client.SubscribeConfig(&river.SubscribeConfig{ChanSize: len(jobs) + 1000, Kinds: []river.EventKind{river.EventKindJobCompleted}})
	defer cancel()
	start := time.Now()
	if err := client.Start(ctx); err != nil {
		return 0, "", err
	}
	// Writing jobs complete in their own transaction; the others on the completion event.
	doneEvents := 0
	done := func() int { return doneEvents + int(jw.written.Load()) }
	timeout := time.After(5 * time.Minute)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for done() < fast {
		select {
		case e := <-events:
			if e.Job.Kind != "straggler" && !(e.Job.Kind == "job" && writers > 0) {
				doneEvents++
			}
		case <-tick.C:
		case <-timeout:
			return 0, "", fmt.Errorf("river: %d of %d after 5 minutes", done(), fast)
		}
	}
	elapsed := time.Since(start)
	if straggler {
		for end := time.Now().Add(time.Minute); sw.runs.Load() == 0 && time.Now().Before(end); {
			time.Sleep(10 * time.Millisecond)
		}
	}
	stopCtx, stop := context.WithTimeout(ctx, 30*time.Second)
	defer stop()
	_ = client.Stop(stopCtx)
	var bad string
	if !noop {
		var rows, distinct int64
		if err := pool.QueryRow(ctx, "SELECT COUNT(*), COUNT(DISTINCT msg_id) FROM bench_writes").Scan(&rows, &distinct); err != nil {
			return 0, "", err
		}
		if rows != int64(writers) || distinct != rows {
			bad = fmt.Sprintf("%d rows written (%d distinct jobs) for %d writers", rows, distinct, writers)
		}
		if r := jw.runs.Load(); r != int64(wantRuns) {
			bad += fmt.Sprintf(" %d runs for %d expected", r, wantRuns)
		}
	}
	return float64(fast) / elapsed.Seconds(), bad, nil
}
