package asyncmonolith

import (
	"fmt"
	"maps"
	"slices"
	"sync"
)

// Rails keep slow consumers from holding up fast ones: a consumer registered WithRail is
// fetched and run only by that rail's processors, each rail with its own processor count,
// batch size and concurrency. The rail is stored on each message (the rail column), and a
// rail's fetch reads its own range of the fetch index. The default rail ("") is
// configured by Config's top-level fields and serves every consumer registered without
// WithRail. See docs/consumer-controls.md.

// DefaultRail is the name of the rail configured by Config's top-level fields.
const DefaultRail = ""

// Defaults of a RailConfig's zero fields.
const (
	// RailConsumerProcessorsDefault is how many processors a rail runs.
	RailConsumerProcessorsDefault = 1
	// RailProcessorBatchSizeDefault is how many messages one fetch of a rail claims.
	RailProcessorBatchSizeDefault = ProcessorBatchSizeDefault
	// RailConsumerConcurrencyDefault is how many consumers one processor of a rail runs at once.
	RailConsumerConcurrencyDefault = ConsumerConcurrencyDefault
)

// RailNameMaxLen is the longest rail name, in bytes (the rail column is varchar(64)).
const RailNameMaxLen = 64

// RailConfig configures one rail of Config.Rails. A zero field means its Rail*Default.
type RailConfig struct {
	// ConsumerProcessors is how many processors fetch this rail's messages. On SQLite it
	// must be 1 (see docs/consumer-controls.md).
	ConsumerProcessors int
	// ProcessorBatchSize is how many due messages of this rail one fetch claims.
	ProcessorBatchSize int
	// ConsumerConcurrency is how many consumers one processor of this rail runs at once.
	ConsumerConcurrency int
}

func (rc RailConfig) withDefaults() RailConfig {
	if rc.ConsumerProcessors == 0 {
		rc.ConsumerProcessors = RailConsumerProcessorsDefault
	}
	if rc.ProcessorBatchSize == 0 {
		rc.ProcessorBatchSize = RailProcessorBatchSizeDefault
	}
	if rc.ConsumerConcurrency == 0 {
		rc.ConsumerConcurrency = RailConsumerConcurrencyDefault
	}
	return rc
}

// validRailName reports whether name can name a rail: 1 to RailNameMaxLen bytes of
// lowercase ASCII letters, digits, '-', '_' and '.', starting with a letter or digit. A
// narrow alphabet compares exactly under every database's default collation.
func validRailName(name string) bool {
	if name == "" || len(name) > RailNameMaxLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case i > 0 && (c == '-' || c == '_' || c == '.'):
		default:
			return false
		}
	}
	return true
}

// validateRails checks Config.Rails (after defaults), naming the failing field.
func (c Config) validateRails() error {
	for _, name := range slices.Sorted(maps.Keys(c.Rails)) {
		rc := c.Rails[name]
		field := func(f string) string { return fmt.Sprintf("Rails[%q].%s", name, f) }
		switch {
		case !validRailName(name):
			return &ConfigError{fmt.Sprintf("Rails[%q]", name), name, "a rail name is 1 to 64 bytes of a-z, 0-9, '-', '_', '.', starting with a letter or digit (the default rail is configured by the top-level fields)"}
		case rc.ConsumerProcessors < 1 || rc.ConsumerProcessors > 1000:
			return &ConfigError{field("ConsumerProcessors"), rc.ConsumerProcessors, "must be between 1 and 1000 (0 means 1)"}
		case rc.ProcessorBatchSize < 1 || rc.ProcessorBatchSize > ProcessorBatchSizeMax:
			return &ConfigError{field("ProcessorBatchSize"), rc.ProcessorBatchSize, "must be between 1 and 10000 (0 means 100)"}
		case rc.ConsumerConcurrency < 1 || rc.ConsumerConcurrency > ConsumerConcurrencyMax:
			return &ConfigError{field("ConsumerConcurrency"), rc.ConsumerConcurrency, "must be between 1 and 10000 (0 means 200)"}
		}
	}
	return nil
}

// rail is one configured rail at run time.
type rail struct {
	name        string
	processors  int
	batchSize   int
	concurrency int
}

// rails returns the configured rails, the default rail first, then by name.
func (c Config) rails() []*rail {
	out := []*rail{{name: DefaultRail, processors: c.ConsumerProcessors, batchSize: c.ProcessorBatchSize, concurrency: c.ConsumerConcurrency}}
	for _, name := range slices.Sorted(maps.Keys(c.Rails)) {
		rc := c.Rails[name]
		out = append(out, &rail{name: name, processors: rc.ConsumerProcessors, batchSize: rc.ProcessorBatchSize, concurrency: rc.ConsumerConcurrency})
	}
	return out
}

// Rails returns the names of the rails this plugin runs: DefaultRail ("") first, then
// Config.Rails by name.
func (p *Plugin) Rails() []string {
	names := []string{DefaultRail}
	return append(names, slices.Sorted(maps.Keys(p.cfg.Rails))...)
}

// hasRail reports whether name is a rail of this plugin.
func (p *Plugin) hasRail(name string) bool {
	if name == DefaultRail {
		return true
	}
	_, ok := p.cfg.Rails[name] // cfg never changes after New
	return ok
}

// A consumer registered WithConcurrency(n) runs at most n messages at once in this
// process, across all processors of its rail. Its messages are claimed apart from the
// others: the rail's main claim leaves them out, and a claim of their own takes no more
// than the consumer's free slots, reserved before the claim, so that no message of it is
// claimed to wait for a slot (its lease would run while it waited) and a consumer at its
// limit holds up nobody.

// limiter counts one limited consumer's runs in this process.
type limiter struct {
	mu      sync.Mutex
	limit   int
	running int
}

// reserve takes up to n free slots and returns how many it took.
func (l *limiter) reserve(n int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := min(n, l.limit-l.running)
	if k <= 0 {
		return 0
	}
	l.running += k
	return k
}

// release frees n slots.
func (l *limiter) release(n int) {
	if n <= 0 {
		return
	}
	l.mu.Lock()
	l.running -= n
	l.mu.Unlock()
}
