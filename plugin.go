package asyncmonolith

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asyncmonolith/asyncmonolith/internal/breaker"
	"github.com/asyncmonolith/asyncmonolith/internal/dialect"
	"github.com/asyncmonolith/asyncmonolith/internal/ident"
	"github.com/asyncmonolith/asyncmonolith/internal/wake"
	"gorm.io/gorm"
)

// Name is the plugin's name in gorm.Config.Plugins.
const Name = "asyncmonolith"

// Plugin is the asyncmonolith GORM plugin: register it once with db.Use, register
// consumers, then Start its processors. One Plugin serves one *gorm.DB.
//
// Its configuration (cfg: the Config given to New, with defaults applied and maps copied)
// never changes after New; the engine's parts (db, dialect, breaker, statements, the
// Message.Tx connections) are set once by Initialize, under mu, before the plugin can be
// reached from the *gorm.DB, and never change afterwards: ready, stored last, publishes
// them, and the hot paths read them without the lock. mu guards binding (Initialize) and
// run (Start and Stop).
type Plugin struct {
	cfg      Config // with defaults; validated by Initialize
	registry *registry
	ids      ident.Generator

	mu      sync.Mutex
	db      *gorm.DB     // set by Initialize
	gormCfg *gorm.Config // the Config of the *gorm.DB given to Initialize (db has a copy)
	// callbacks is the bound *gorm.DB's db.Callback(): every session, transaction and
	// Config copy of it shares them; a *gorm.DB opened with a copy of its config has its own.
	callbacks  any
	dialect    dialect.Dialect
	run        *running // non-nil between Start and Stop
	stmts      *statements
	claimMu    sync.Mutex // serializes claims where the database has no row locks (SQLite)
	claimTurns sync.Map   // rail name → *atomic.Uint32: which part of its claims goes first (claimTurn)
	breaker    *breaker.Set

	counters counters

	wake *wake.Waker

	txConns *txConns // the connections of Message.Tx transactions

	ready         atomic.Bool  // set last by Initialize: the engine's parts are in place
	startsWaiting atomic.Int32 // Start calls waiting for the last run's processors (tests read it)
}

// New returns a plugin with the given config. The config is validated when the plugin is
// registered with db.Use, which returns any ConfigError.
func New(cfg Config) *Plugin {
	return &Plugin{cfg: cfg.withDefaults(), registry: newRegistry(), wake: wake.New()}
}

// now reads the plugin's clock.
func (p *Plugin) now() time.Time { return p.cfg.Clock.Now() }

// Name returns "asyncmonolith"; it implements gorm.Plugin.
func (p *Plugin) Name() string { return Name }

// Initialize validates the config and installs the callbacks that flush buffered messages;
// it implements gorm.Plugin and is called by db.Use.
//
// GORM calls it again for every *gorm.DB opened with a copy of the registered one's
// gorm.Config, whose Plugins map it shares: dbresolver opens its sources and replicas that
// way. Such a call is accepted and changes nothing: the plugin stays bound to the first
// *gorm.DB, whose connections it uses. Registering the plugin on any other *gorm.DB fails.
func (p *Plugin) Initialize(db *gorm.DB) error {
	if bound, err := p.initializedFor(db); bound || err != nil {
		return err
	}
	cfg := p.cfg
	if err := cfg.validate(); err != nil {
		return err
	}
	d, err := dialect.For(db)
	if err != nil {
		return fmt.Errorf("asyncmonolith: %w", err)
	}
	if err := cfg.validateFor(d); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.db != nil { // bound meanwhile by a concurrent Initialize
		return fmt.Errorf("%w; create one Plugin per database", ErrAlreadyInitialized)
	}
	p.dialect = d
	p.breaker = breaker.New(breaker.Config{Threshold: cfg.BreakerFailures, Cooldown: cfg.BreakerCooldown,
		MaxCooldown: cfg.BreakerMaxCooldown, Disabled: cfg.DisableBreaker})
	p.db = db.Session(&gorm.Session{NewDB: true})
	p.gormCfg = db.Config
	p.callbacks = db.Callback()
	p.txConns = newTxConns(p.db, cfg.MaxMessageTxs)
	if err := p.buildStatements(db); err != nil {
		return fmt.Errorf("asyncmonolith: build statements: %w", err)
	}
	if err := p.registerCallbacks(db); err != nil {
		return err
	}
	p.ready.Store(true) // publishes the engine: read without the lock from here on
	return nil
}

// initializedFor reports whether the plugin is bound already, and fails when db is not
// one opened from the bound *gorm.DB's config.
func (p *Plugin) initializedFor(db *gorm.DB) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.db == nil {
		return false, nil
	}
	// A copy of the bound config (gorm.Open(d, &copied)) has a Config of its own but the
	// same Plugins map. The very same Config opened again is not such a copy: GORM has then
	// pointed the bound *gorm.DB at the new connection.
	if db.Config != p.gormCfg && samePlugins(db.Config.Plugins, p.gormCfg.Plugins) {
		return true, nil
	}
	return true, fmt.Errorf("%w; create one Plugin per database", ErrAlreadyInitialized)
}

// samePlugins reports whether a and b are one map.
func samePlugins(a, b map[string]gorm.Plugin) bool {
	return a != nil && reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// pluginOf returns the plugin registered on db. A *gorm.DB opened with a copy of the
// registered one's gorm.Config (as dbresolver opens its connections) shares its Plugins
// map but is another database, with callbacks of its own that flush nothing: it has no
// plugin.
func pluginOf(db *gorm.DB) (*Plugin, error) {
	if db == nil || db.Config == nil {
		return nil, ErrNotRegistered
	}
	if pl, ok := db.Config.Plugins[Name]; ok {
		if p, ok := pl.(*Plugin); ok {
			if p.callbacks != nil && p.callbacks != any(db.Callback()) {
				return nil, fmt.Errorf("%w: this *gorm.DB was opened with a copy of the registered one's gorm.Config; use the *gorm.DB the plugin was registered on (or one of its sessions)", ErrNotRegistered)
			}
			return p, nil
		}
	}
	return nil, ErrNotRegistered
}

// DB returns the *gorm.DB the plugin was registered on (a new session), or ErrNotRegistered.
func (p *Plugin) DB() (*gorm.DB, error) {
	if !p.ready.Load() {
		return nil, ErrNotRegistered
	}
	return p.db.Session(&gorm.Session{NewDB: true}), nil
}

// Of returns the plugin registered on db, or ErrNotRegistered.
func Of(db *gorm.DB) (*Plugin, error) { return pluginOf(db) }

// running is the state of started processors.
type running struct {
	ctx       context.Context    // the Start context: cancelling it is a hard stop
	stopFetch context.CancelFunc // no new batches
	cancel    context.CancelFunc // cancels running consumers (hard stop)
	detach    func() bool        // unhooks the Start context
	wg        sync.WaitGroup
	done      chan struct{} // closed when every processor goroutine has returned
	// stopping is set (under Plugin.mu) when Stop begins: the run stays the plugin's until
	// its processors are gone, so that a Start meanwhile waits for them instead of starting
	// a second set beside them.
	stopping bool
}

// over reports whether r's processors are going: stopped, or hard-stopped by its context.
func (r *running) over() bool { return r.stopping || r.ctx.Err() != nil }

// Start starts the consumer processors (and the scheduled-message processors) in the
// background. They run until Stop, or until ctx is cancelled (which is a hard stop:
// running consumers see their context cancelled and their messages are due again at once,
// without counting an attempt). After such a hard stop, or while Stop runs, Start
// waits (within its own ctx) for the last processors to return, then starts new ones: two
// sets of processors never run at once.
// On SQLite, asking for more than one processor fails with ErrConcurrencyUnsupported and
// starts nothing.
func (p *Plugin) Start(ctx context.Context) error {
	if !p.ready.Load() {
		return ErrNotRegistered
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.run != nil {
		r := p.run
		if !r.over() {
			return ErrAlreadyStarted
		}
		// The last run is stopping (Stop, or its Start context was cancelled): its
		// processors are returning. They must be gone before new ones start (on SQLite,
		// only one processor may run at a time).
		p.mu.Unlock()
		p.startsWaiting.Add(1)
		select {
		case <-r.done:
		case <-ctx.Done():
			p.startsWaiting.Add(-1)
			p.mu.Lock()
			return fmt.Errorf("asyncmonolith: start: waiting for the processors of the last run to return: %w", ctx.Err())
		}
		p.startsWaiting.Add(-1)
		p.mu.Lock()
		if p.run == r {
			p.run = nil
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("asyncmonolith: start: %w", err)
	}
	if err := p.checkConcurrency(); err != nil {
		return err
	}
	workCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	fetchCtx, stopFetch := context.WithCancel(workCtx)
	r := &running{ctx: ctx, stopFetch: stopFetch, cancel: cancel, done: make(chan struct{})}
	// A cancelled Start context is a hard stop.
	r.detach = context.AfterFunc(ctx, cancel)
	index := 0
	for _, rl := range p.cfg.rails() {
		for range rl.processors {
			pr := &processor{p: p, rail: rl, index: index, wakeCh: p.wake.Subscribe()}
			index++
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				defer p.wake.Unsubscribe(pr.wakeCh)
				pr.loop(fetchCtx, workCtx)
			}()
		}
	}
	p.startSchedulers(fetchCtx, workCtx, &r.wg)
	if !p.cfg.PollOnly {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			p.listen(fetchCtx)
		}()
	}
	// A run ended by its Start context stays p.run until the next Start or Stop, which
	// wait for done and report it.
	go func() {
		r.wg.Wait()
		p.txConns.closeIdle() // kept Message.Tx connections go back to the pool
		close(r.done)
	}()
	p.run = r
	return nil
}

// checkConcurrency refuses concurrent processors on a database without row locks.
func (p *Plugin) checkConcurrency() error {
	if p.dialect.RowLocks() {
		return nil
	}
	if p.cfg.ConsumerProcessors > 1 {
		return fmt.Errorf("%w: Config.ConsumerProcessors = %d on %s; use 1", ErrConcurrencyUnsupported, p.cfg.ConsumerProcessors, p.dialect.Name())
	}
	// Each rail runs one processor there; their claims take turns (Plugin.claim).
	for _, name := range slices.Sorted(maps.Keys(p.cfg.Rails)) {
		if n := p.cfg.Rails[name].ConsumerProcessors; n > 1 {
			return fmt.Errorf("%w: Config.Rails[%q].ConsumerProcessors = %d on %s; use 1 (each rail runs one processor, and their claims take turns)", ErrConcurrencyUnsupported, name, n, p.dialect.Name())
		}
	}
	return p.checkScheduleConcurrency()
}

// Stop stops the processors gracefully: no new messages are claimed, running consumers
// finish and their outcomes are recorded. If ctx ends first, running consumers are
// cancelled, their messages are made due again at once without counting an attempt, and
// Stop returns ctx's error once every processor goroutine has returned. After the context
// given to Start was cancelled (a hard stop), Stop waits for the processors still returning
// and reports ErrNotStarted: they were not stopped gracefully.
func (p *Plugin) Stop(ctx context.Context) error {
	p.mu.Lock()
	r := p.run
	if r == nil || r.stopping {
		p.mu.Unlock()
		return ErrNotStarted
	}
	if r.ctx.Err() != nil {
		// Hard-stopped already; r stays the plugin's run until its processors are gone, so
		// that a new Start waits for them too.
		p.mu.Unlock()
		select {
		case <-r.done:
		case <-ctx.Done():
			return fmt.Errorf("asyncmonolith: stop: waiting for the processors of a cancelled Start: %w", ctx.Err())
		}
		p.mu.Lock()
		if p.run == r {
			p.run = nil
		}
		p.mu.Unlock()
		return fmt.Errorf("%w: the processors stopped when the context given to Start ended (%w)", ErrNotStarted, context.Cause(r.ctx))
	}
	r.stopping = true
	p.mu.Unlock()
	defer func() {
		r.detach()
		p.mu.Lock()
		if p.run == r {
			p.run = nil
		}
		p.mu.Unlock()
	}()
	r.stopFetch()
	select {
	case <-r.done:
		r.cancel()
		return nil
	case <-ctx.Done():
		r.cancel()
		<-r.done
		return fmt.Errorf("asyncmonolith: stop: %w", ctx.Err())
	}
}

// ProcessBatch processes up to ProcessorBatchSize due messages synchronously, records their
// outcomes, and returns how many messages it claimed. Its consumers run concurrently, up to
// ConsumerConcurrency: it claims no more at a time than can start at once, so that every
// message runs within its lease, and records each run's outcome as the run ends. With
// Config.Rails it then does the same for each rail, by name, with that rail's batch size
// and concurrency; WithConcurrency limits hold. A claim refused by a transient conflict (a
// deadlock with another instance's claim) is tried again a few times, as a started
// processor does; one that lasts is returned wrapping ErrRetryable. It is for tests and
// tools that drive the queue without Start; it may run beside started processors.
func (p *Plugin) ProcessBatch(ctx context.Context) (int, error) {
	if !p.ready.Load() {
		return 0, ErrNotRegistered
	}
	return p.processBatch(ctx)
}

// listen wakes the processors when another process commits messages, where the database
// reports commits (PostgreSQL LISTEN/NOTIFY, on one pooled connection or on a connection of
// its own to Config.ListenDSN). It reconnects with backoff; processors keep polling
// meanwhile.
func (p *Plugin) listen(ctx context.Context) {
	sqlDB, err := p.db.DB()
	if err != nil {
		return
	}
	wake.Listen(ctx, p.cfg.Logger, func(ctx context.Context) error {
		var err error
		if p.cfg.ListenDSN != "" {
			err = p.dialect.ListenDirect(ctx, sqlDB, p.cfg.ListenDSN, p.wake.Notify)
		} else {
			err = p.dialect.Listen(ctx, sqlDB, p.wake.Notify)
		}
		if errors.Is(err, dialect.ErrNoListen) {
			return fmt.Errorf("%w: %w", wake.ErrStopListening, err)
		}
		return err
	})
}
