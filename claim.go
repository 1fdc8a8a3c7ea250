package asyncmonolith

import (
	"cmp"
	"context"
	"database/sql"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/asyncmonolith/asyncmonolith/internal/dialect"
)

// A processor claims messages instead of holding them in an open transaction while their
// consumers run: a short transaction locks due rows (FOR UPDATE SKIP LOCKED, so processors
// in any number of processes share the queue), moves their available_after to the end of
// a lease and marks them running (pending = NULL), and commits. Until the lease ends no
// other processor fetches them; the consumers then run holding no connection, no
// transaction and, on SQLite, no write lock. Completion (complete.go) is fenced by the
// lease: it touches a row only while available_after still equals the lease this claim
// set and the row is still running, so a run whose lease ran out (a paused process) cannot
// complete a message another processor has claimed since. A process that dies leaves its
// messages to be claimed again when their lease ends, without an attempt counted.

// listOrder is fetch order rail by rail (dialect.ListOrder): the order of
// idx_consumer_messages_rail_fetch, which listings read as a range.
const listOrder = dialect.ListOrder

// leaseMarginMin keeps a lease longer than the run it covers even with LeaseMargin tiny:
// a completion must land before the lease ends.
const leaseMarginMin = 100 * time.Millisecond

// claimStatements are a claim's SQL for one batch size, lease plan and filter, rendered by
// the dialect once and kept.
type claimStatements struct {
	// one is the single-statement claim (PostgreSQL); its parameters are the filter's
	// (the rail, then its consumer types), the due time, the limit, the base lease end,
	// then each group's consumer types and lease end.
	one string
	// fetch is the locking SELECT of the two-statement claim (its parameters: the filter's,
	// the due time and the limit), followed by an UPDATE of the rows it returned.
	fetch string
}

// claimFilter is which of a rail's messages a claim takes (dialect.ClaimFilter).
type claimFilter = dialect.ClaimFilter

// claimKey keys the kept claim statements.
type claimKey struct {
	n      int
	shape  string // leasePlan.shape
	filter claimFilter
}

// claimSQL returns the claim statements for batches of n under plan and filter f.
func (p *Plugin) claimSQL(n int, plan *leasePlan, f claimFilter) *claimStatements {
	key := claimKey{n, plan.shape, f}
	if cs, ok := p.stmts.claims.Load(key); ok {
		return cs.(*claimStatements)
	}
	cs := &claimStatements{}
	sizes := make([]int, len(plan.groups))
	for i, g := range plan.groups {
		sizes[i] = len(g.types)
	}
	// The lease parameters follow the filter's, the due time and the limit.
	if cs.one = p.dialect.ClaimSQL(dialect.LockDue(p.dialect, dialect.ClaimKeys, f), f.Params()+2, sizes); cs.one == "" {
		cs.fetch = dialect.ClaimFetch(p.dialect, f)
	}
	p.stmts.claims.Store(key, cs)
	return cs
}

// claimed is one claim: its rows, each row's locator and lease end.
type claimed struct {
	rows     []ConsumerMessage // AvailableAfter is the due time from before the claim
	locators []string
	leases   []int64    // Unix ms: each row's available_after until it is completed
	limits   []*limiter // the slot each row holds of its consumer's WithConcurrency, or nil
	plan     *leasePlan
}

// add appends claim part, whose rows each hold a slot of lim (nil: none).
func (c *claimed) add(part claimed, lim *limiter) {
	c.rows = append(c.rows, part.rows...)
	c.locators = append(c.locators, part.locators...)
	c.leases = append(c.leases, part.leases...)
	for range part.rows {
		c.limits = append(c.limits, lim)
	}
	c.plan = part.plan
}

// releaseLimits frees the slots c's rows hold (their runs will not start).
func (c *claimed) releaseLimits() {
	for _, l := range c.limits {
		if l != nil {
			l.release(1)
		}
	}
}

// A claim holds each message for the longest run its consumer may take — its timeout,
// then AbandonGrace — plus LeaseMargin for the completion. Leases are per consumer, so
// that a consumer with a long timeout does not make a dead process's other messages wait
// as long: consumers with the default timeout, and types not registered in this process,
// get the base lease; the others are grouped by their lease in the claim's statement.

// leasePlan is the leases of one registry snapshot.
type leasePlan struct {
	// limited is, by rail, the consumers registered WithConcurrency, by name.
	limited map[string][]*registration
	snap    *registrySnapshot
	base    time.Duration
	groups  []leaseGroup // by lease; never the base
	shape   string       // the groups' sizes, for the statement cache
	byType  map[string]time.Duration
}

// leaseGroup is the consumer types that share a lease other than the base.
type leaseGroup struct {
	lease time.Duration
	types []string
}

// leases returns the lease plan of the current registry, made once per registry state.
func (p *Plugin) leases() *leasePlan {
	snap := p.registry.snap.Load()
	if plan := p.stmts.leases.Load(); plan != nil && plan.snap == snap {
		return plan
	}
	margin := p.cfg.AbandonGrace + max(p.cfg.LeaseMargin, leaseMarginMin)
	plan := &leasePlan{snap: snap, base: p.cfg.ConsumerTimeout + margin, byType: map[string]time.Duration{},
		limited: map[string][]*registration{}}
	byLease := map[time.Duration][]string{}
	for _, name := range slices.Sorted(maps.Keys(snap.byConsumer)) {
		if reg := snap.byConsumer[name]; reg.limit != nil {
			plan.limited[reg.rail] = append(plan.limited[reg.rail], reg)
		}
	}
	for name, reg := range snap.byConsumer {
		if reg.timeout == 0 || reg.timeout+margin == plan.base {
			continue
		}
		d := reg.timeout + margin
		plan.byType[name] = d
		byLease[d] = append(byLease[d], name)
	}
	for _, d := range slices.Sorted(maps.Keys(byLease)) {
		types := byLease[d]
		slices.Sort(types)
		plan.groups = append(plan.groups, leaseGroup{lease: d, types: types})
		plan.shape += strconv.Itoa(len(types)) + ","
	}
	p.stmts.leases.Store(plan)
	return plan
}

// lease is how long plan holds a message of consumerType.
func (plan *leasePlan) lease(consumerType string) time.Duration {
	if d, ok := plan.byType[consumerType]; ok {
		return d
	}
	return plan.base
}

// claimTimeout bounds a claim's statements (see claim): a database that does not answer
// fails the claim, and the processor backs off.
const claimTimeout = 10 * time.Second

// args are the claim statement's parameters after the due time and the limit.
func (plan *leasePlan) args(now time.Time) []any {
	args := []any{now.Add(plan.base).UnixMilli()}
	for _, g := range plan.groups {
		for _, t := range g.types {
			args = append(args, t)
		}
		args = append(args, now.Add(g.lease).UnixMilli())
	}
	return args
}

// claim locks up to n due messages of rail rl, leases them and commits, in short
// transactions: for each consumer of the rail registered WithConcurrency, as many of its
// messages as it has free slots (reserved before its claim), and the rail's other messages,
// the two parts taking turns going first (claimTurn). On a database without row locks, one claim runs at a time in this plugin.
//
// The claim's statements are not cut short when ctx ends (a hard stop): a statement the
// server has received may still commit after the client gave up on it (PostgreSQL runs it
// to its end), and its messages would then stay leased to no one until their leases end.
// It runs to its end, for claimTimeout at most; the caller's runs then see ctx done and
// hand the messages back at once, without an attempt.
func (p *Plugin) claim(ctx context.Context, rl string, n int) (claimed, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), claimTimeout)
	defer cancel()
	if !p.dialect.RowLocks() {
		p.claimMu.Lock()
		defer p.claimMu.Unlock()
	}
	plan := p.leases()
	limited := plan.limited[rl]
	if len(limited) == 0 {
		return p.claimWhere(ctx, plan, claimFilter{}, []any{rl}, n)
	}
	types := make([]string, len(limited))
	for i, reg := range limited {
		types[i] = reg.consumerType
	}
	c := claimed{plan: plan}
	claimRest := func() error { // the rail's messages of consumers without a limit
		want := n - len(c.rows)
		if want <= 0 {
			return nil
		}
		part, err := p.claimWhere(ctx, plan, claimFilter{Types: len(types)}, append([]any{rl}, stringArgsOf(types)...), want)
		if err != nil {
			return err
		}
		c.add(part, nil)
		return nil
	}
	limitedFirst := p.claimTurn(rl)
	if !limitedFirst {
		if err := claimRest(); err != nil {
			return claimed{}, err // no slot is held yet
		}
	}
	for _, reg := range limited {
		want := n - len(c.rows)
		if want <= 0 {
			break
		}
		k := reg.limit.reserve(want)
		if k == 0 {
			continue
		}
		part, err := p.claimWhere(ctx, plan, claimFilter{Only: true}, []any{rl, reg.consumerType}, k)
		reg.limit.release(k - len(part.rows))
		c.add(part, reg.limit)
		if err != nil {
			c.releaseLimits() // its rows are left to their leases
			return claimed{}, err
		}
	}
	if limitedFirst {
		if err := claimRest(); err != nil {
			c.releaseLimits()
			return claimed{}, err
		}
	}
	return c, nil
}

// claimTurn reports whether this claim of rail rl claims its limited consumers' messages
// before the others': claim after claim, the two parts take turns going first, so that
// neither starves the other. (A limited consumer whose limit covers the rail's slots took
// every claim while it had a backlog, however long the others' messages had been due.)
func (p *Plugin) claimTurn(rl string) bool {
	v, ok := p.claimTurns.Load(rl)
	if !ok {
		v, _ = p.claimTurns.LoadOrStore(rl, new(atomic.Uint32))
	}
	return v.(*atomic.Uint32).Add(1)%2 == 1
}

// claimWhere claims up to n due messages matching filter f, whose parameters are args.
func (p *Plugin) claimWhere(ctx context.Context, plan *leasePlan, f claimFilter, args []any, n int) (claimed, error) {
	cs := p.claimSQL(n, plan, f)
	now := p.now()
	args = append(args, now.UnixMilli(), n)
	var c claimed
	if cs.one != "" {
		// One statement, in autocommit: it is its own short transaction.
		args = append(args, plan.args(now)...)
		rs, err := p.db.Statement.ConnPool.QueryContext(ctx, cs.one, args...)
		if err != nil {
			return claimed{}, err
		}
		err = c.scan(rs, n)
		sortClaimed(&c)
		c.lease(plan, now)
		return c, err
	}
	tx := p.db.WithContext(ctx).Begin(p.dialect.ProcessorTxOptions())
	if tx.Error != nil {
		return claimed{}, tx.Error
	}
	defer tx.Rollback()
	conn := tx.Statement.ConnPool
	rs, err := conn.QueryContext(ctx, cs.fetch, args...)
	if err != nil {
		return claimed{}, err
	}
	if err := c.scan(rs, n); err != nil {
		return claimed{}, err
	}
	c.lease(plan, now)
	if len(c.rows) == 0 {
		return c, nil
	}
	byLease := map[int64][]string{}
	for i, l := range c.leases {
		byLease[l] = append(byLease[l], c.locators[i])
	}
	for l, locs := range byLease {
		if err := p.updateLocated(ctx, conn, []string{"available_after", "pending"}, []any{l, nil}, locs, 0); err != nil {
			return claimed{}, err
		}
	}
	return c, tx.Commit().Error
}

// stringArgsOf is ss as statement arguments.
func stringArgsOf(ss []string) []any {
	args := make([]any, len(ss))
	for i, s := range ss {
		args[i] = s
	}
	return args
}

// lease sets each claimed row's lease end, as the claim's statement set it.
func (c *claimed) lease(plan *leasePlan, now time.Time) {
	c.plan = plan
	c.leases = make([]int64, len(c.rows))
	for i := range c.rows {
		c.leases[i] = now.Add(plan.lease(c.rows[i].ConsumerType)).UnixMilli()
	}
}

// scan reads a claim's rows (dialect.ClaimColumns, then the locator) and closes rs.
func (c *claimed) scan(rs *sql.Rows, n int) error {
	defer rs.Close()
	c.rows = make([]ConsumerMessage, 0, n)
	c.locators = make([]string, 0, n)
	var insertID, trace, span sql.NullString
	for rs.Next() {
		c.rows, c.locators = append(c.rows, ConsumerMessage{}), append(c.locators, "")
		m := &c.rows[len(c.rows)-1]
		if err := rs.Scan(&m.ID, &m.CreatedAt, &m.AvailableAfter, &m.Attempts, &m.ConsumerType, &m.PayloadType,
			&m.Payload, &insertID, &trace, &span, &m.Snoozes, &c.locators[len(c.locators)-1]); err != nil {
			return err
		}
		m.InsertID = m.ID
		if insertID.Valid {
			m.InsertID = insertID.String
		}
		if trace.Valid {
			t := trace.String
			m.TraceID = &t
		}
		if span.Valid {
			sp := span.String
			m.SpanID = &sp
		}
	}
	return rs.Err()
}

// sortClaimed puts a claim in due order (UPDATE … RETURNING returns rows in no order).
func sortClaimed(c *claimed) {
	idx := make([]int, len(c.rows))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		ra, rb := &c.rows[a], &c.rows[b]
		return cmp.Or(cmp.Compare(ra.AvailableAfter, rb.AvailableAfter), cmp.Compare(ra.CreatedAt, rb.CreatedAt),
			strings.Compare(ra.ID, rb.ID))
	})
	rows, locs := make([]ConsumerMessage, len(idx)), make([]string, len(idx))
	for i, j := range idx {
		rows[i], locs[i] = c.rows[j], c.locators[j]
	}
	c.rows, c.locators = rows, locs
}
