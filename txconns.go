package asyncmonolith

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"
)

// txConns are the connections Message.Tx transactions run on. At most
// Config.MaxMessageTxs are in use at once. On a pool without a limit (database/sql's
// default) they are kept between runs: returned to a pool with its default two idle
// connections, a burst of concurrent Message.Tx would close and open a connection per
// message. A connection idle here for txConnIdle goes back to the pool.
type txConns struct {
	db    *sql.DB // nil when the *gorm.DB's pool is not a *sql.DB: transactions begin on it
	gorm  *gorm.DB
	slots chan struct{}
	// waiting counts runs waiting for a slot: while any does, processors claim no more
	// (the messages would only queue behind them, their timeouts running).
	waiting atomic.Int32

	mu   sync.Mutex
	idle []idleConn // most recently used last
	// sweep gives kept connections back once they have been idle for txConnIdle when
	// nothing else does (ProcessBatch called once, then not again); nil when none is kept.
	sweep *time.Timer
	// idleFor is txConnIdle (shorter in tests).
	idleFor time.Duration
}

type idleConn struct {
	c     *sql.Conn
	since time.Time
}

// txConnIdle is how long a Message.Tx connection is kept unused before it goes back to
// the pool.
const txConnIdle = 5 * time.Second

// txHandle is a Message.Tx transaction: its statements, its end, and its connection.
type txHandle interface {
	gorm.ConnPool
	gorm.TxCommitter
}

func newTxConns(db *gorm.DB, n int) *txConns {
	t := &txConns{gorm: db, slots: make(chan struct{}, n), idleFor: txConnIdle}
	if sqlDB, err := db.DB(); err == nil {
		t.db = sqlDB
	}
	return t
}

// acquire waits, with ctx, for one of the MaxMessageTxs slots.
func (t *txConns) acquire(ctx context.Context) error {
	select {
	case t.slots <- struct{}{}:
		return nil
	default:
	}
	t.waiting.Add(1)
	defer t.waiting.Add(-1)
	select {
	case t.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", errNoTxSlot, ctx.Err())
	}
}

// errNoTxSlot marks a run whose context ended while its Message.Tx waited for a slot: the
// plugin's own limit stopped it, not its consumer.
var errNoTxSlot = errors.New("asyncmonolith: waiting for a Message.Tx slot (Config.MaxMessageTxs)")

// release gives a slot back.
func (t *txConns) release() { <-t.slots }

// begin starts a transaction living in ctx, on a kept connection where there is one. The
// returned connection (nil on the fallback path) must be given back with put.
func (t *txConns) begin(ctx context.Context, opts *sql.TxOptions) (txHandle, *sql.Conn, error) {
	if t.db == nil {
		tx := t.gorm.WithContext(ctx).Begin(opts)
		if tx.Error != nil {
			return nil, nil, tx.Error
		}
		return tx.Statement.ConnPool.(txHandle), nil, nil
	}
	c, err := t.get(ctx)
	if err != nil {
		return nil, nil, err
	}
	tx, err := c.BeginTx(ctx, opts)
	if err != nil {
		c.Close() // it may be broken: let the pool decide
		return nil, nil, err
	}
	return tx, c, nil
}

// get returns a kept connection, or a new one from the pool.
func (t *txConns) get(ctx context.Context) (*sql.Conn, error) {
	t.mu.Lock()
	now := time.Now()
	var c *sql.Conn
	for len(t.idle) > 0 && c == nil {
		last := t.idle[len(t.idle)-1]
		t.idle = t.idle[:len(t.idle)-1]
		if now.Sub(last.since) < t.idleFor {
			c = last.c
		} else {
			last.c.Close()
		}
	}
	t.trimLocked(now)
	t.mu.Unlock()
	if c != nil {
		return c, nil
	}
	return t.db.Conn(ctx)
}

// put keeps c for the next transaction, or gives it back to the pool when the last one
// ended badly (the connection may be broken), or when the pool has a limit
// (SetMaxOpenConns): a connection kept here is one the pool cannot give to anything else,
// and the claims and completions need some.
func (t *txConns) put(c *sql.Conn, healthy bool) {
	if c == nil {
		return
	}
	if !healthy || t.db.Stats().MaxOpenConnections > 0 {
		c.Close()
		return
	}
	t.mu.Lock()
	t.idle = append(t.idle, idleConn{c: c, since: time.Now()})
	t.trimLocked(time.Now())
	if t.sweep == nil {
		t.sweep = time.AfterFunc(t.idleFor, t.sweepIdle)
	}
	t.mu.Unlock()
}

// sweepIdle is the sweep timer's: it trims, and comes back while connections are kept.
func (t *txConns) sweepIdle() {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	t.trimLocked(now)
	t.sweep = nil
	if len(t.idle) > 0 {
		t.sweep = time.AfterFunc(t.idleFor-now.Sub(t.idle[0].since), t.sweepIdle)
	}
}

// trimLocked gives the connections idle longer than txConnIdle back to the pool (the
// oldest are first).
func (t *txConns) trimLocked(now time.Time) {
	n := 0
	for n < len(t.idle) && now.Sub(t.idle[n].since) >= t.idleFor {
		t.idle[n].c.Close()
		n++
	}
	if n > 0 {
		t.idle = append(t.idle[:0], t.idle[n:]...)
	}
}

// trim gives the connections idle longer than txConnIdle back to the pool.
func (t *txConns) trim() {
	t.mu.Lock()
	t.trimLocked(time.Now())
	t.mu.Unlock()
}

// closeIdle gives every kept connection back to the pool (when the processors stop).
func (t *txConns) closeIdle() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ic := range t.idle {
		ic.c.Close()
	}
	t.idle = nil
	if t.sweep != nil {
		t.sweep.Stop()
		t.sweep = nil
	}
}
