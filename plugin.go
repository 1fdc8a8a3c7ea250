package asyncmonolith

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"sync"
	"time"

	"github.com/asyncmonolith/asyncmonolith/internal/dialect"
	"github.com/asyncmonolith/asyncmonolith/internal/ident"
	"gorm.io/gorm"
)

// Name is the plugin's name in gorm.Config.Plugins.
const Name = "asyncmonolith"

// Plugin is the asyncmonolith GORM plugin: register it once with db.Use, register
// consumers, then Start its processors. One Plugin serves one *gorm.DB.
type Plugin struct {
	cfg      Config // as given; defaults are applied in Initialize
	registry *registry
	ids      ident.Generator

	mu      sync.Mutex
	db      *gorm.DB     // set by Initialize
	gormCfg *gorm.Config // the Config of the *gorm.DB given to Initialize (db has a copy)
	// callbacks is the bound *gorm.DB's db.Callback(): every session, transaction and
	// Config copy of it shares them; a *gorm.DB opened with a copy of its config has its own.
	callbacks any
	dialect   dialect.Dialect
	log       *slog.Logger
	clock     Clock
	run       *running // non-nil between Start and Stop
	hooks     Hooks
	stmts     *statements
	breaker   *breakers

	counters counters

	wake *waker

	txConns *txConns // the connections of Message.Tx transactions
}

// New returns a plugin with the given config. The config is validated when the plugin is
// registered with db.Use, which returns any ConfigError.
func New(cfg Config) *Plugin {
	d := cfg.withDefaults()
	return &Plugin{
		cfg:      cfg,
		registry: newRegistry(),
		log:      d.Logger,
		clock:    d.Clock,
		wake:     newWaker(),
		hooks:    cfg.Hooks,
	}
}

// now reads the plugin's clock.
func (p *Plugin) now() time.Time { return p.clock.Now() }

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
	cfg := p.cfg.withDefaults()
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
		return fmt.Errorf("asyncmonolith: plugin already initialized on a *gorm.DB; create one Plugin per database")
	}
	p.cfg = cfg
	p.log = cfg.Logger
	p.clock = cfg.Clock
	p.dialect = d
	p.breaker = newBreakers(cfg)
	p.db = db.Session(&gorm.Session{NewDB: true})
	p.gormCfg = db.Config
	p.callbacks = db.Callback()
	p.txConns = newTxConns(p.db, cfg.MaxMessageTxs)
	if err := p.buildStatements(db); err != nil {
		return fmt.Errorf("asyncmonolith: build statements: %w", err)
	}
	return registerCallbacks(db)
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
	return true, fmt.Errorf("asyncmonolith: plugin already initialized on a *gorm.DB; create one Plugin per database")
}

// samePlugins reports whether a and b are one map.
func samePlugins(a, b map[string]gorm.Plugin) bool {
	return a != nil && reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// Migrate creates or updates the three tables and their indexes with GORM's AutoMigrate.
// The same schema, as SQL for each database, is in the migrations package.
//
// On PostgreSQL it also installs the trigger that notifies processors in other processes
// of new messages (migrations/postgres/0002_notify.up.sql); on MySQL/MariaDB it gives the
// id and name columns a NO PAD binary collation, so that they compare exactly
// (migrations/mysql/0003_exact_names.up.sql).
//
// Every statement runs in one transaction, so that a resolver plugin keeps them all on the
// source (source.go); MySQL/MariaDB still commit each DDL statement as it runs.
func (p *Plugin) Migrate(ctx context.Context, db *gorm.DB) error {
	d, err := dialect.For(db)
	if err != nil {
		return fmt.Errorf("asyncmonolith: migrate: %w", err)
	}
	// Instances starting at once each call Migrate: one runs at a time.
	if err := dialect.MigrateTx(ctx, db, d, func(tx *gorm.DB) error { return migrate(ctx, tx, d) }); err != nil {
		return fmt.Errorf("asyncmonolith: migrate: %w", err)
	}
	return nil
}

func migrate(ctx context.Context, db *gorm.DB, d dialect.Dialect) error {
	if err := db.WithContext(ctx).AutoMigrate(models()...); err != nil {
		return err
	}
	// Before leases, the unique index left out pending (migrations/*/0002_leases or 0003):
	// it would make a running message block its insert id.
	if m := db.WithContext(ctx).Migrator(); m.HasIndex(&ConsumerMessage{}, legacyInsertIDIndex) {
		if err := m.DropIndex(&ConsumerMessage{}, legacyInsertIDIndex); err != nil {
			return fmt.Errorf("drop %s: %w", legacyInsertIDIndex, err)
		}
	}
	if err := d.EnsureExactNames(ctx, db); err != nil {
		return err
	}
	if err := d.EnsureNotify(ctx, db); err != nil {
		return fmt.Errorf("notify trigger: %w", err)
	}
	return nil
}

// legacyInsertIDIndex is the unique index on (insert_id, consumer_type) of schemas created
// before leases.
const legacyInsertIDIndex = "ux_consumer_messages_insert_id_consumer_type"

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
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.db == nil {
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
}

// Start starts the consumer processors (and the scheduled-message processors) in the
// background. They run until Stop, or until ctx is cancelled (which is a hard stop:
// running consumers see their context cancelled and their messages are due again at once,
// without counting an attempt). After such a hard stop the plugin can be started again:
// Start waits (within its own ctx) for the last processors to return.
// On SQLite, asking for more than one processor fails with ErrConcurrencyUnsupported and
// starts nothing.
func (p *Plugin) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.db == nil {
		return ErrNotRegistered
	}
	for p.run != nil {
		r := p.run
		if r.ctx.Err() == nil {
			return ErrAlreadyStarted
		}
		// The last Start's context was cancelled: its processors are returning. They must
		// be gone before new ones start (on SQLite, only one processor may run at a time).
		p.mu.Unlock()
		select {
		case <-r.done:
		case <-ctx.Done():
			p.mu.Lock()
			return fmt.Errorf("asyncmonolith: start: waiting for the processors of a cancelled Start: %w", ctx.Err())
		}
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
	for i := range p.cfg.ConsumerProcessors {
		pr := &processor{p: p, index: i, wakeCh: p.wake.subscribe()}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer p.wake.unsubscribe(pr.wakeCh)
			pr.loop(fetchCtx, workCtx)
		}()
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
	if r == nil {
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
	p.run = nil
	p.mu.Unlock()
	defer r.detach()
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
// message runs within its lease. It is for tests and tools that drive the queue without
// Start; it may run beside started processors.
func (p *Plugin) ProcessBatch(ctx context.Context) (int, error) {
	p.mu.Lock()
	ready := p.db != nil
	p.mu.Unlock()
	if !ready {
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
	for failures := 0; ; failures++ {
		started := time.Now()
		var err error
		if p.cfg.ListenDSN != "" {
			err = p.dialect.ListenDirect(ctx, sqlDB, p.cfg.ListenDSN, p.wake.notify)
		} else {
			err = p.dialect.Listen(ctx, sqlDB, p.wake.notify)
		}
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > listenHealthy {
			failures = 0 // it was listening: this is a new outage, not the same one
		}
		if errors.Is(err, dialect.ErrNoListen) {
			p.log.DebugContext(ctx, "asyncmonolith: no commit notifications; processors poll", "reason", err)
			return
		}
		wait := backoff(failures+1, 100*time.Millisecond, 30*time.Second)
		p.log.WarnContext(ctx, "asyncmonolith: notification listener failed; processors poll meanwhile", "error", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// listenHealthy is how long a listener must have run for its next failure to count as a
// new outage (restarting the backoff) rather than one more failed reconnect.
const listenHealthy = time.Second

// jitter returns d ± 20 %, so processors of many instances do not poll in lockstep.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d*8/10 + time.Duration(rand.Int64N(int64(d)*4/10+1))
}
