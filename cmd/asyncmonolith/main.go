// Command asyncmonolith operates an asyncmonolith queue from a shell: migrations, statistics,
// poisoned messages and schedules, on PostgreSQL, MySQL/MariaDB or SQLite.
//
//	asyncmonolith [--db postgres|mysql|sqlite] [--dsn DSN] [--json] COMMAND [ARGS]
//
//	migrate up | down                       apply or revert the schema (migrations package)
//	migrate sql --dialect D [--down]        print the SQL, for golang-migrate or goose
//	stats [--rails R1,R2]                   per rail, then per consumer and rail: pending,
//	                                        running, due, oldest due age, poisoned
//	poisoned list [--consumer C] [--payload P] [--older-than D] [--limit N]
//	poisoned show ID
//	poisoned requeue [--delay D] ID...
//	poisoned delete ID...
//	poisoned purge --older-than D [--consumer C] [--payload P]
//	schedules list [--tag T]
//	ui [--addr HOST:PORT] [--read-only] [--rails R1,R2]   serve the web dashboard (default 127.0.0.1:8080)
//
// The database comes from --db/--dsn or AM_DB/AM_DSN. Exit codes: 0 success, 1 the
// operation failed, 2 usage error, 3 not found, 4 requeue conflict.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
	"github.com/asyncmonolith/asyncmonolith/internal/dialect"
	"github.com/asyncmonolith/asyncmonolith/migrations"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Exit codes.
const (
	exitOK       = 0
	exitFailed   = 1
	exitUsage    = 2
	exitNotFound = 3
	exitConflict = 4
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

type cli struct {
	out, errOut io.Writer
	json        bool
	dialect     string
	dsn         string
	rails       []string // the application's Config.Rails names (--rails), for stats and ui
}

const usage = `usage: asyncmonolith [--db postgres|mysql|sqlite] [--dsn DSN] [--json] COMMAND

commands:
  migrate up | down                      apply or revert the schema
  migrate sql --dialect D [--down]       print the schema SQL (for golang-migrate, goose)
  stats [--rails R1,R2]                  per rail, then per consumer and rail: pending,
                                         running, due, oldest due age, poisoned
  poisoned list|show|requeue|delete|purge
  schedules list [--tag T]
  ui [--addr HOST:PORT] [--read-only]    serve the web dashboard (default 127.0.0.1:8080;
                                         basic auth from AM_UI_USER and AM_UI_PASSWORD)

Run 'asyncmonolith COMMAND --help' for a command's flags. The database also comes from the
AM_DB and AM_DSN environment variables.
Exit codes: 0 ok, 1 failed, 2 usage, 3 not found, 4 requeue conflict.
`

func run(ctx context.Context, args []string, out, errOut io.Writer) int {
	c := &cli{out: out, errOut: errOut}
	global := flag.NewFlagSet("asyncmonolith", flag.ContinueOnError)
	global.SetOutput(errOut)
	global.Usage = func() { fmt.Fprint(errOut, usage) }
	global.StringVar(&c.dialect, "db", os.Getenv("AM_DB"), "database: postgres, mysql or sqlite")
	global.StringVar(&c.dsn, "dsn", os.Getenv("AM_DSN"), "data source name")
	global.BoolVar(&c.json, "json", false, "print JSON")
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	err := c.dispatch(ctx, global.Args())
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintln(errOut, "asyncmonolith:", err)
		fmt.Fprint(errOut, usage)
		return exitUsage
	case errors.Is(err, am.ErrMessageNotFound), errors.Is(err, am.ErrScheduleNotFound):
		fmt.Fprintln(errOut, "asyncmonolith:", err)
		return exitNotFound
	case errors.Is(err, am.ErrRequeueConflict):
		fmt.Fprintln(errOut, "asyncmonolith:", err)
		return exitConflict
	default:
		fmt.Fprintln(errOut, "asyncmonolith:", err)
		return exitFailed
	}
}

func (c *cli) dispatch(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError{"no command"}
	}
	cmd, rest := args[0], args[1:]
	sub := ""
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		sub, rest = rest[0], rest[1:]
	}
	if cmd == "ui" {
		return c.ui(ctx, args[1:])
	}
	switch cmd + " " + sub {
	case "migrate up", "migrate down":
		if err := c.flags(cmd+" "+sub, rest, nil); err != nil {
			return err
		}
		db, err := c.open()
		if err != nil {
			return err
		}
		if sub == "up" {
			err = migrations.Up(ctx, db)
		} else {
			err = migrations.Down(ctx, db)
		}
		if err != nil {
			return err
		}
		v, _, err := migrations.Version(ctx, db)
		if err != nil {
			return err
		}
		return c.print(map[string]any{"version": v}, func(w io.Writer) { fmt.Fprintf(w, "schema version %d\n", v) })
	case "migrate sql":
		var dialect string
		var down bool
		if err := c.flags("migrate sql", rest, func(fs *flag.FlagSet) {
			fs.StringVar(&dialect, "dialect", c.dialect, "postgres, mysql or sqlite")
			fs.BoolVar(&down, "down", false, "print the down migrations")
		}); err != nil {
			return err
		}
		sql, err := migrations.SQL(dialect, !down)
		if errors.Is(err, migrations.ErrUnknownDialect) {
			return usageError{err.Error()}
		}
		if err != nil {
			return err
		}
		return c.print(map[string]string{"dialect": dialect, "sql": sql}, func(w io.Writer) { fmt.Fprint(w, sql) })
	case "stats ":
		if err := c.flags("stats", rest, c.railsFlag); err != nil {
			return err
		}
		p, err := c.plugin()
		if err != nil {
			return err
		}
		st, err := c.stats(ctx, p)
		if err != nil {
			return err
		}
		return c.print(st, func(w io.Writer) { st.text(w, len(c.rails) > 0) })
	case "poisoned list", "poisoned purge":
		var f am.MessageFilter
		if err := c.flags(cmd+" "+sub, rest, func(fs *flag.FlagSet) {
			fs.StringVar(&f.ConsumerType, "consumer", "", "only this consumer type")
			fs.StringVar(&f.PayloadType, "payload", "", "only this payload type")
			fs.DurationVar(&f.OlderThan, "older-than", 0, "only messages poisoned at least this long ago (e.g. 72h)")
			if sub == "list" {
				fs.IntVar(&f.Limit, "limit", 100, "at most this many")
			}
		}); err != nil {
			return err
		}
		p, err := c.plugin()
		if err != nil {
			return err
		}
		if sub == "purge" {
			if f.OlderThan <= 0 {
				return usageError{"poisoned purge needs --older-than"}
			}
			n, err := p.PurgePoisoned(ctx, f)
			if err != nil {
				return err
			}
			return c.print(map[string]int64{"purged": n}, func(w io.Writer) { fmt.Fprintf(w, "purged %d\n", n) })
		}
		rows, err := p.ListPoisoned(ctx, f)
		if err != nil {
			return err
		}
		return c.print(rows, func(w io.Writer) {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tCONSUMER\tPAYLOAD\tATTEMPTS\tPOISONED AT\tERROR")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", r.ID, r.ConsumerType, r.PayloadType, r.Attempts,
					time.UnixMilli(r.PoisonedAt).UTC().Format(time.RFC3339), oneLine(r.LastError, 60))
			}
			tw.Flush()
		})
	case "poisoned show":
		var ids []string
		if err := c.flags("poisoned show ID", rest, nil, &ids); err != nil {
			return err
		}
		if len(ids) != 1 {
			return usageError{"poisoned show takes one ID"}
		}
		p, err := c.plugin()
		if err != nil {
			return err
		}
		r, err := p.GetPoisoned(ctx, ids[0])
		if err != nil {
			return err
		}
		return c.print(r, func(w io.Writer) {
			fmt.Fprintf(w, "id:           %s\nconsumer:     %s\npayload type: %s\ninsert id:    %s\nattempts:     %d\ncreated:      %s\npoisoned:     %s\nerror:        %s\npayload:      %s\n",
				r.ID, r.ConsumerType, r.PayloadType, r.InsertID, r.Attempts, time.UnixMilli(r.CreatedAt).UTC().Format(time.RFC3339),
				time.UnixMilli(r.PoisonedAt).UTC().Format(time.RFC3339), r.LastError, r.Payload)
		})
	case "poisoned requeue", "poisoned delete":
		var delay time.Duration
		var ids []string
		if err := c.flags(cmd+" "+sub+" ID...", rest, func(fs *flag.FlagSet) {
			if sub == "requeue" {
				fs.DurationVar(&delay, "delay", 0, "make the messages due after this delay")
			}
		}, &ids); err != nil {
			return err
		}
		if len(ids) == 0 {
			return usageError{"poisoned " + sub + " needs at least one ID"}
		}
		p, err := c.plugin()
		if err != nil {
			return err
		}
		if sub == "delete" {
			n, err := p.DeletePoisoned(ctx, ids)
			if err != nil {
				return err
			}
			if n == 0 {
				return fmt.Errorf("%w: none of %v", am.ErrMessageNotFound, ids)
			}
			return c.print(map[string]int64{"deleted": n}, func(w io.Writer) { fmt.Fprintf(w, "deleted %d\n", n) })
		}
		n, err := p.RequeuePoisoned(ctx, ids, am.RequeueDelay(delay))
		if perr := c.print(map[string]int{"requeued": n}, func(w io.Writer) { fmt.Fprintf(w, "requeued %d\n", n) }); perr != nil {
			return perr
		}
		return err
	case "schedules list":
		var tag string
		if err := c.flags("schedules list", rest, func(fs *flag.FlagSet) {
			fs.StringVar(&tag, "tag", "", "only schedules with this tag")
		}); err != nil {
			return err
		}
		p, err := c.plugin()
		if err != nil {
			return err
		}
		rows, err := p.ListSchedules(ctx, tag)
		if err != nil {
			return err
		}
		return c.print(rows, func(w io.Writer) {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTAG\tEXPRESSION\tZONE\tPAYLOAD\tNEXT RUN")
			for _, r := range rows {
				tag := ""
				if r.Tag != nil {
					tag = *r.Tag
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, tag, r.ChronExpression, r.ChronTimezone, r.PayloadType, r.NextRun.Format(time.RFC3339))
			}
			tw.Flush()
		})
	}
	return usageError{fmt.Sprintf("unknown command %q", strings.TrimSpace(cmd+" "+sub))}
}

// flags parses a command's flags; positional arguments go to pos (if given).
func (c *cli) flags(name string, args []string, define func(*flag.FlagSet), pos ...*[]string) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.errOut)
	fs.Usage = func() {
		fmt.Fprintf(c.errOut, "usage: asyncmonolith [--db D --dsn DSN --json] %s\n", name)
		fs.PrintDefaults()
	}
	if define != nil {
		define(fs)
	}
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return flag.ErrHelp
			}
			return usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
	if len(pos) > 0 {
		*pos[0] = positional
	} else if len(positional) > 0 {
		return usageError{fmt.Sprintf("%s: unexpected argument %q", name, positional[0])}
	}
	return nil
}

func (c *cli) open() (*gorm.DB, error) {
	if c.dsn == "" {
		return nil, usageError{"no database: give --dsn (and --db), or AM_DSN"}
	}
	cfg := &gorm.Config{Logger: logger.Discard}
	name, _ := dialect.Canonical(c.dialect)
	switch name {
	case "postgres":
		return gorm.Open(postgres.Open(c.dsn), cfg)
	case "mysql":
		return gorm.Open(mysql.Open(c.dsn), cfg)
	case "sqlite":
		return gorm.Open(sqlite.Open(c.dsn), cfg)
	}
	return nil, usageError{fmt.Sprintf("--db %q: want postgres, mysql or sqlite", c.dialect)}
}

func (c *cli) plugin() (*am.Plugin, error) {
	db, err := c.open()
	if err != nil {
		return nil, err
	}
	cfg := am.Config{}
	for _, name := range c.rails {
		if cfg.Rails == nil {
			cfg.Rails = map[string]am.RailConfig{}
		}
		cfg.Rails[name] = am.RailConfig{}
	}
	p := am.New(cfg)
	if err := db.Use(p); err != nil {
		if ce := (*am.ConfigError)(nil); errors.As(err, &ce) {
			return nil, usageError{fmt.Sprintf("--rails: %v", err)}
		}
		return nil, err
	}
	return p, nil
}

func (c *cli) print(v any, text func(io.Writer)) error {
	if c.json {
		enc := json.NewEncoder(c.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	text(c.out)
	return nil
}

func oneLine(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}
