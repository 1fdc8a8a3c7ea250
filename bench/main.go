// Command bench measures asyncmonolith on one database, in one process, and prints one
// table: produce throughput, burn-down consume throughput for several processor counts and
// batch sizes, commit→consume latency (producer in this process and in another), backlog
// behaviour, and — on PostgreSQL — River and a raw-SQL floor burning down the same work, with
// our figures as ratios of theirs. Every figure is the median of -runs runs, with min and max.
//
// The sections of consumers that do real work (issue 12): waiting (consumers that wait 10 ms
// and 50 ms and touch no database, beside River and a raw lease floor), mix (wait, then
// write a row through Message.Tx; 10 % of them failing once after their write), straggler
// (1,000 messages of 10 ms with and without one of 2 s), appwrite (the application's
// Create + Produce transaction while consumers wait 200 ms) and conns (connections held
// while 100 waiting consumers run). The backoff section puts 10,000 always-failing
// messages, retried with exponential backoff, beside healthy ones (next to the poison
// storm's figures). Each run checks that every message was done once, ran
// as often as it should and wrote its row once.
//
//	cd bench && go run . -db postgres [-dsn …] [-n 100000] [-runs 3]
//	cd bench && go run . -db mysql
//	cd bench && go run . -db sqlite
//	cd bench && go run . -db postgres -only waiting,mix,straggler,conns [-wait-n 5000]
//	cd bench && go run . -db sqlite -only appwrite
//	cd bench && go run . -db postgres -only rails [-wait-n 2000] [-rails-slow-wait 2s]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"time"
)

type config struct {
	dialect    string
	dsn        string
	n          int
	runs       int
	quick      bool
	backlog    int
	rate       int
	latencyDur time.Duration
	waitN      int             // messages per burn-down of the waiting, mix sections
	appDur     time.Duration   // how long the appwrite section's application writes
	only       map[string]bool // sections to run; empty: all
	// child producer mode
	childProducer bool
	schema        string
}

func main() {
	exit := 0
	defer func() { os.Exit(exit) }()
	var c config
	flag.StringVar(&c.dialect, "db", "postgres", "postgres, mysql or sqlite")
	flag.StringVar(&c.dsn, "dsn", "", "server DSN without a database (default: the local server)")
	flag.IntVar(&c.n, "n", 100_000, "messages per burn-down run")
	flag.IntVar(&c.runs, "runs", 3, "runs per figure (median, min, max)")
	flag.BoolVar(&c.quick, "quick", false, "one configuration of each kind (for CI)")
	flag.IntVar(&c.backlog, "backlog", 1_000_000, "large backlog size")
	flag.IntVar(&c.rate, "rate", 500, "latency: messages per second from the producer")
	flag.DurationVar(&c.latencyDur, "latency-duration", 4*time.Second, "latency: how long the producer runs")
	flag.IntVar(&c.waitN, "wait-n", 5_000, "waiting, mix: messages per burn-down run")
	flag.DurationVar(&c.appDur, "app-duration", 3*time.Second, "appwrite: how long the application writes, per run")
	flag.BoolVar(&c.childProducer, "child-producer", false, "internal: run as the other-process producer")
	flag.StringVar(&c.schema, "schema", "", "internal: the database/schema to use")
	only := flag.String("only", "", "comma-separated sections to run: produce, burndown, river, waiting, mix, straggler, appwrite, conns, rails, storm, backoff, latency, backlog (default: all; waiting, mix and straggler include River on PostgreSQL)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	memProfile := flag.String("memprofile", "", "write an allocation profile of the whole run to this file")
	flag.Parse()
	if *memProfile != "" {
		defer func() {
			f, err := os.Create(*memProfile)
			if err == nil {
				err = pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "bench:", err)
				exit = 1
			}
		}()
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	if *only != "" {
		c.only = map[string]bool{}
		for _, s := range strings.Split(*only, ",") {
			s = strings.TrimSpace(s)
			if !knownSections[s] {
				fmt.Fprintf(os.Stderr, "bench: unknown section %q\n", s)
				os.Exit(2)
			}
			c.only[s] = true
		}
	}
	if err := run(context.Background(), c); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		exit = 1
	}
}

var knownSections = map[string]bool{"produce": true, "burndown": true, "river": true, "storm": true, "backoff": true, "latency": true, "backlog": true,
	"waiting": true, "mix": true, "straggler": true, "appwrite": true, "conns": true,
	"rails": true}

// wants reports whether a section is to run.
func (c config) wants(section string) bool { return len(c.only) == 0 || c.only[section] }

// stat is min / median / max of a figure.
type stat struct{ min, med, max float64 }

func measure(runs int, f func() (float64, error)) (stat, error) {
	var xs []float64
	for range runs {
		x, err := f()
		if err != nil {
			return stat{}, err
		}
		xs = append(xs, x)
	}
	sort.Float64s(xs)
	return stat{xs[0], xs[len(xs)/2], xs[len(xs)-1]}, nil
}

func (s stat) String() string {
	if s.med >= 100 {
		return fmt.Sprintf("%8.0f  (%.0f–%.0f)", s.med, s.min, s.max)
	}
	return fmt.Sprintf("%8.2f  (%.2f–%.2f)", s.med, s.min, s.max)
}

// report collects rows of the table.
type report struct{ rows [][3]string }

func (r *report) add(what string, s stat, note string) {
	r.rows = append(r.rows, [3]string{what, s.String(), note})
	fmt.Fprintf(os.Stderr, "  %-58s %s %s\n", what, s, note)
}

func (r *report) section(name string) { r.rows = append(r.rows, [3]string{"", "", name}) }

func (r *report) print(c config) {
	fmt.Printf("\n## asyncmonolith bench: %s\n\n", c.dialect)
	fmt.Printf("machine: %d CPUs (GOMAXPROCS %d), %s/%s, %s; database on this machine\n", runtime.NumCPU(),
		runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, runtime.Version())
	fmt.Printf("settings: n=%d per no-op burn-down, %d per waiting/mix burn-down, %d runs per figure (median (min–max)), latency producer %d msg/s for %s\n\n",
		c.n, c.waitN, c.runs, c.rate, c.latencyDur)
	fmt.Printf("| %-58s | %-26s | %s |\n|---|---|---|\n", "figure", "median (min–max)", "note")
	for _, row := range r.rows {
		if row[0] == "" {
			fmt.Printf("| **%s** | | |\n", row[2])
			continue
		}
		fmt.Printf("| %-58s | %-26s | %s |\n", row[0], row[1], row[2])
	}
	fmt.Printf("\npeak RSS of this process: %s\n", peakRSS())
}

func peakRSS() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "VmHWM:"))
		}
	}
	return "unknown"
}

func ratio(a, b stat) string {
	if b.med == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f×", a.med/b.med)
}
