package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	am "github.com/asyncmonolith/asyncmonolith"
)

// statsOutput is what `stats` prints: the rails, then each consumer on its rail. The JSON
// form has the same two lists.
type statsOutput struct {
	Rails     []am.RailStats  `json:"rails"`
	Consumers []am.QueueStats `json:"consumers"`
}

// railsFlag defines --rails: the CLI does not see the application's Config, so it is told
// which rails the application runs (listed even when empty, marked configured).
func (c *cli) railsFlag(fs *flag.FlagSet) {
	fs.Func("rails", "comma-separated names of the application's Config.Rails (listed even when empty)", func(s string) error {
		for _, name := range strings.Split(s, ",") {
			if name = strings.TrimSpace(name); name != "" {
				c.rails = append(c.rails, name)
			}
		}
		return nil
	})
}

func (c *cli) stats(ctx context.Context, p *am.Plugin) (statsOutput, error) {
	consumers, err := p.Stats(ctx)
	if err != nil {
		return statsOutput{}, err
	}
	rails := p.SumByRail(consumers) // one read: the two tables agree
	if consumers == nil {
		consumers = []am.QueueStats{} // [] in JSON, like rails
	}
	return statsOutput{Rails: rails, Consumers: consumers}, nil
}

// railName shows the default rail, whose name is "", as "(default)".
func railName(name string) string {
	if name == am.DefaultRail {
		return "(default)"
	}
	return name
}

// text prints the two tables; the CONFIGURED column only when --rails said which rails
// the application runs (without it, every rail but the default would read "no").
func (s statsOutput) text(w io.Writer, configured bool) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "RAIL\tPENDING\tRUNNING\tDUE\tOLDEST DUE\tPOISONED"
	if configured {
		head += "\tCONFIGURED"
	}
	fmt.Fprintln(tw, head)
	for _, r := range s.Rails {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%d", railName(r.Rail), r.Pending, r.Running, r.Due, r.OldestDueAge.Round(time.Millisecond), r.Poisoned)
		if configured {
			fmt.Fprintf(tw, "\t%s", map[bool]string{true: "yes", false: "no"}[r.Configured])
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "CONSUMER\tRAIL\tPENDING\tRUNNING\tDUE\tOLDEST DUE\tPOISONED")
	for _, q := range s.Consumers {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%d\n", q.ConsumerType, railName(q.Rail), q.Pending, q.Running, q.Due, q.OldestDueAge.Round(time.Millisecond), q.Poisoned)
	}
	tw.Flush()
}
